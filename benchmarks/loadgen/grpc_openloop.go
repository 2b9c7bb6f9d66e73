// Open-loop gRPC load generator (issue 24), native: single-text Embed calls with Poisson arrivals
// at a fixed rate, from a process of its own, on the official grpc-go client (Debian's
// golang-google-grpc-dev; built by benchmarks/setup_loadgen.sh, no module download).
//
//	grpc_openloop ADDRESS RATE DURATION_S SEED REQUESTS_FILE
//
// REQUESTS_FILE holds a JSON list of base64 strings: EmbedRequest messages already serialized (by
// benchmarks/grpc_loadgen.py, with the package's generated protobuf code), sent in turn as raw
// bytes. So this program needs no generated Go code, and spends no CPU encoding or decoding
// protobuf: what it costs per call is the HTTP/2 stream. Every call is due at its arrival time
// whatever the earlier ones did (open loop): latency counts from that due time, so a generator
// that falls behind shows as latency, never as a quieter server. One channel (one HTTP/2
// connection), as a gRPC client has. Prints one line, as grpc_openloop.js does:
// AE_RESULT {requests, errors, duration_us, p50_us, p99_us, max_us}.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io/ioutil"
	"math/rand"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
)

const method = "/aios.embeddings.v1.EmbeddingService/Embed"
const deadline = 10 * time.Second

// rawCodec sends and receives messages as the bytes they are: content-type application/grpc+proto.
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(2)
}

func main() {
	if len(os.Args) != 6 {
		fail("usage: grpc_openloop ADDRESS RATE DURATION_S SEED REQUESTS_FILE")
	}
	address := os.Args[1]
	rate, err1 := strconv.ParseFloat(os.Args[2], 64)
	durationS, err2 := strconv.ParseFloat(os.Args[3], 64)
	seed, err3 := strconv.ParseInt(os.Args[4], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || rate <= 0 || durationS <= 0 {
		fail("RATE and DURATION_S must be positive numbers, SEED an integer")
	}
	data, err := ioutil.ReadFile(os.Args[5])
	if err != nil {
		fail("cannot read %s: %v", os.Args[5], err)
	}
	var requests [][]byte // JSON base64 strings decode to bytes
	if err := json.Unmarshal(data, &requests); err != nil || len(requests) == 0 {
		fail("%s must hold a JSON list of base64 messages: %v", os.Args[5], err)
	}

	// Connect before the clock starts: the channel's handshake is not a request's latency.
	ready, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	conn, err := grpc.DialContext(ready, address, grpc.WithInsecure(), grpc.WithBlock(),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	cancel()
	if err != nil {
		fail("cannot reach %s: %v", address, err)
	}
	defer conn.Close()

	random := rand.New(rand.NewSource(seed))
	duration := time.Duration(durationS * float64(time.Second))
	var mu sync.Mutex
	var wg sync.WaitGroup
	latencies := make([]int64, 0, int(rate*durationS)+16)
	errors := 0

	call := func(due time.Time, request []byte) {
		defer wg.Done()
		ctx, cancel := context.WithDeadline(context.Background(), due.Add(deadline))
		defer cancel()
		var response []byte
		err := conn.Invoke(ctx, method, &request, &response)
		took := time.Since(due).Microseconds()
		mu.Lock()
		if err != nil || len(response) == 0 {
			errors++
		} else {
			latencies = append(latencies, took)
		}
		mu.Unlock()
	}

	start := time.Now()
	due := start
	for sent := 0; due.Sub(start) < duration; sent++ {
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		}
		wg.Add(1)
		go call(due, requests[sent%len(requests)]) // late arrivals go at once, still timed from due
		due = due.Add(time.Duration(random.ExpFloat64() / rate * float64(time.Second)))
	}
	wg.Wait()
	elapsed := time.Since(start)
	if elapsed > duration {
		elapsed = duration
	}

	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	pick := func(q float64) int64 {
		if len(latencies) == 0 {
			return 0
		}
		i := int(q * float64(len(latencies)))
		if i > len(latencies)-1 {
			i = len(latencies) - 1
		}
		return latencies[i]
	}
	var most int64
	if len(latencies) > 0 {
		most = latencies[len(latencies)-1]
	}
	out, _ := json.Marshal(map[string]int64{
		"requests": int64(len(latencies)), "errors": int64(errors), "duration_us": elapsed.Microseconds(),
		"p50_us": pick(0.5), "p99_us": pick(0.99), "max_us": most,
	})
	fmt.Printf("AE_RESULT %s\n", out)
}
