// SPDX-License-Identifier: BSL-1.0

// nxsys-oauth2-peer: the Go peer of nxsys-contention-bench. N goroutines call Token() at once
// on an expired token of golang.org/x/oauth2's own refreshing TokenSource, the one every
// oauth2.Config hands out: Config.TokenSource(ctx, &Token{RefreshToken: ...}) is a
// ReuseTokenSource over x/oauth2's tokenRefresher, so the refresh request (RFC 6749 names,
// client credentials in the form: AuthStyleInParams) and the answer's parsing are x/oauth2's
// code too. The token server must answer with RFC 6749 names (nxsys-mock-server --snake).
//
// Each burst: the cached token is made expired (its Expiry moved an hour back, as the C++ bench
// moves its clock 4 hours on), N goroutines are parked on a gate, t0 is taken and the gate is
// closed; every goroutine's latency counts from t0 to its Token() result. The token requests the
// server saw are the difference of GET /stats (refreshes + errors) around the burst. Prints one
// JSON object on stdout.
//
// Build (offline, GOPATH mode, Debian's golang-go and golang-golang-x-oauth2-dev):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o nxsys-oauth2-peer .
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
)

type waitSummary struct {
	P50   float64 `json:"p50"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p999"`
	Max   float64 `json:"max"`
	Count int     `json:"count"`
}

type burstResult struct {
	N                 int         `json:"n"`
	Results           int         `json:"results"` // Token() calls that returned (tokens and errors)
	Errors            int         `json:"errors"`
	FirstError        string      `json:"first_error,omitempty"`
	Requests          uint64      `json:"server_requests"` // token requests answered (tokens and errors)
	ServerMaxInFlight uint64      `json:"server_max_in_flight"`
	WallMs            float64     `json:"wall_ms"` // t0 to the last result
	WaitMs            waitSummary `json:"wait_ms"`
	WakeNsPerWaiter   float64     `json:"wake_ns_per_waiter"` // (wall - L) / N
	PeakRSSGrowthMiB  float64     `json:"peak_rss_growth_mib"`
}

type output struct {
	Peer          string        `json:"peer"`
	GoVersion     string        `json:"go_version"`
	GOMAXPROCS    int           `json:"gomaxprocs"`
	TokenURL      string        `json:"token_url"`
	LatencyMs     int           `json:"latency_ms"`
	WarmupBursts  int           `json:"warmup_bursts"`
	Bursts        []burstResult `json:"bursts"`
	FreshReadNs   float64       `json:"fresh_read_ns"` // one goroutine, Token() on a valid token
	FreshReadIter int           `json:"fresh_read_iterations"`
}

type serverStats struct {
	Refreshes   uint64 `json:"refreshes"`
	Errors      uint64 `json:"errors"`
	MaxInFlight uint64 `json:"max_in_flight"`
}

// getStats reads the mock server's counters (GET /stats) on a client of its own, so that the
// oauth2 client's connections are left alone.
func getStats(c *http.Client, statsURL string) (serverStats, error) {
	var s serverStats
	res, err := c.Get(statsURL)
	if err != nil {
		return s, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return s, fmt.Errorf("GET %s: %s", statsURL, res.Status)
	}
	err = json.NewDecoder(res.Body).Decode(&s)
	return s, err
}

// As bench::summarize: the sample at rank p*(n-1), rounded.
func summarize(v []float64) waitSummary {
	s := waitSummary{Count: len(v)}
	if len(v) == 0 {
		return s
	}
	sort.Float64s(v)
	at := func(p float64) float64 { return v[int(p*float64(len(v)-1)+0.5)] }
	s.P50, s.P99, s.P999, s.Max = at(0.50), at(0.99), at(0.999), v[len(v)-1]
	return s
}

// Peak RSS (VmHWM) since resetPeakRSS, in KiB; 0 where /proc is missing.
func procStatusKiB(field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, field+":") {
			f := strings.Fields(line[len(field)+1:])
			if len(f) > 0 {
				v, _ := strconv.ParseInt(f[0], 10, 64)
				return v
			}
		}
	}
	return 0
}

func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// burst releases n goroutines at once on the source's expired token.
func burst(ts oauth2.TokenSource, cached *oauth2.Token, n int, latencyMs int) (burstResult, *oauth2.Token) {
	r := burstResult{N: n}
	// Moved back before the goroutines exist (the go statements order it before their reads).
	cached.Expiry = time.Now().Add(-time.Hour)
	resetPeakRSS()
	rss0 := procStatusKiB("VmRSS")
	lat := make([]float64, n)
	toks := make([]*oauth2.Token, n)
	errs := make([]error, n)
	var ready, done sync.WaitGroup
	ready.Add(n)
	done.Add(n)
	gate := make(chan struct{})
	var t0 time.Time
	for i := 0; i < n; i++ {
		go func(i int) {
			defer done.Done()
			ready.Done()
			<-gate
			toks[i], errs[i] = ts.Token()
			lat[i] = float64(time.Since(t0).Nanoseconds()) / 1e6
		}(i)
	}
	ready.Wait() // every goroutine started; each is parked on the gate or about to be
	t0 = time.Now()
	close(gate)
	done.Wait()
	r.PeakRSSGrowthMiB = float64(procStatusKiB("VmHWM")-rss0) / 1024
	next := cached
	for i := range lat {
		r.Results++
		if errs[i] != nil {
			r.Errors++
			if r.FirstError == "" {
				r.FirstError = errs[i].Error()
			}
		} else if toks[i] != nil {
			next = toks[i]
		}
	}
	r.WaitMs = summarize(lat)
	r.WallMs = r.WaitMs.Max
	r.WakeNsPerWaiter = (r.WallMs - float64(latencyMs)) * 1e6 / float64(n)
	return r, next
}

func main() {
	tokenURL := flag.String("url", "", "token endpoint, e.g. http://127.0.0.1:PORT/nxsys/oauth/token (required)")
	statsURL := flag.String("stats-url", "", "the server's counters (default: /stats on the token endpoint's host)")
	n := flag.Int("n", 100, "goroutines per burst")
	bursts := flag.Int("bursts", 1, "measured bursts")
	warmup := flag.Int("warmup", 1, "untimed bursts of N before the measured ones")
	procs := flag.Int("gomaxprocs", 0, "GOMAXPROCS (0: leave it as it is)")
	latencyMs := flag.Int("latency-ms", 0, "the server's latency L, for wake = (wall - L) / N")
	clientID := flag.String("client-id", "test-client", "client id")
	clientSecret := flag.String("client-secret", "test-secret", "client secret")
	refreshToken := flag.String("refresh-token", "refresh-0", "refresh token")
	freshIters := flag.Int("fresh-iterations", 1000000, "Token() calls on a valid token for fresh_read_ns (0: skip)")
	timeout := flag.Duration("timeout", 60*time.Second, "HTTP timeout of each token request")
	flag.Parse()
	fail := func(format string, a ...any) {
		fmt.Fprintf(os.Stderr, "nxsys-oauth2-peer: "+format+"\n", a...)
		os.Exit(1)
	}
	if *tokenURL == "" || flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}
	if *n < 1 || *bursts < 1 || *warmup < 0 || *procs < 0 || *latencyMs < 0 || *freshIters < 0 {
		fail("--n and --bursts must be at least 1, the others not negative")
	}
	if *procs > 0 {
		runtime.GOMAXPROCS(*procs)
	}
	if *statsURL == "" {
		u, err := url.Parse(*tokenURL)
		if err != nil || u.Host == "" {
			fail("--url %q is not an absolute URL", *tokenURL)
		}
		*statsURL = (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: "/stats"}).String()
	}

	// x/oauth2's own refreshing source: ReuseTokenSource over its tokenRefresher.
	conf := &oauth2.Config{
		ClientID:     *clientID,
		ClientSecret: *clientSecret,
		Endpoint:     oauth2.Endpoint{TokenURL: *tokenURL, AuthStyle: oauth2.AuthStyleInParams},
	}
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient,
		&http.Client{Timeout: *timeout, Transport: &http.Transport{}})
	ts := conf.TokenSource(ctx, &oauth2.Token{RefreshToken: *refreshToken})
	statsClient := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}

	// Warm: a token and a connection, as the C++ designs' warm_up.
	cached, err := ts.Token()
	if err != nil {
		fail("first token: %v", err)
	}
	if _, err := getStats(statsClient, *statsURL); err != nil {
		fail("server counters: %v", err)
	}
	out := output{
		Peer:         "golang.org/x/oauth2 Config.TokenSource (ReuseTokenSource over tokenRefresher)",
		GoVersion:    runtime.Version(),
		GOMAXPROCS:   runtime.GOMAXPROCS(0),
		TokenURL:     *tokenURL,
		LatencyMs:    *latencyMs,
		WarmupBursts: *warmup,
	}
	for w := 0; w < *warmup; w++ {
		_, cached = burst(ts, cached, *n, *latencyMs)
	}
	for b := 0; b < *bursts; b++ {
		runtime.GC() // the previous burst's garbage is not this one's cost
		before, err := getStats(statsClient, *statsURL)
		if err != nil {
			fail("server counters: %v", err)
		}
		var r burstResult
		r, cached = burst(ts, cached, *n, *latencyMs)
		after, err := getStats(statsClient, *statsURL)
		if err != nil {
			fail("server counters: %v", err)
		}
		r.Requests = (after.Refreshes + after.Errors) - (before.Refreshes + before.Errors)
		r.ServerMaxInFlight = after.MaxInFlight
		out.Bursts = append(out.Bursts, r)
	}
	if *freshIters > 0 {
		if _, err := ts.Token(); err != nil { // a valid token to read
			fail("token before the fresh reads: %v", err)
		}
		start := time.Now()
		for i := 0; i < *freshIters; i++ {
			if _, err := ts.Token(); err != nil {
				fail("fresh read: %v", err)
			}
		}
		out.FreshReadNs = float64(time.Since(start).Nanoseconds()) / float64(*freshIters)
		out.FreshReadIter = *freshIters
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		fail("%v", err)
	}
	for _, r := range out.Bursts {
		if r.Errors > 0 {
			os.Exit(1)
		}
	}
}
