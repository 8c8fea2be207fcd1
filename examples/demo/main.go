// Command ferret-demo is a small Go HTTP service bundled with Ferret so the
// agent has something realistic to watch: goroutines, heap churn, GC and
// HTTP traffic. With -selfload (the default) it calls its own endpoints, so
// it is busy without any outside traffic.
//
// Standard library only; builds with Go 1.19 and newer.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	maxWorkMS  = 5000
	maxSleepMS = 60000
	maxAllocKB = 64 * 1024
	ringSlots  = 32
)

// ring keeps the last ringSlots buffers from /alloc alive; older ones become
// garbage, so steady /alloc traffic produces both live heap and GC work.
type ring struct {
	mu    sync.Mutex
	bufs  [ringSlots][]byte
	next  int
	bytes int64
}

func (r *ring) put(b []byte) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bytes -= int64(len(r.bufs[r.next]))
	r.bufs[r.next] = b
	r.bytes += int64(len(b))
	r.next = (r.next + 1) % ringSlots
	return r.bytes
}

type server struct {
	requests int64 // atomic
	retained ring
}

// intParam reads query parameter name as an int in [0, max], or def.
func intParam(r *http.Request, name string, def, max int) (int, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad %s=%q: want a non-negative integer", name, s)
	}
	if n > max {
		n = max
	}
	return n, nil
}

func (s *server) count(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		atomic.AddInt64(&s.requests, 1)
		h(w, r)
	}
}

func (s *server) handleRoot(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	fmt.Fprintf(w, "hello from ferret-demo (pid %d, %d requests served)\n",
		os.Getpid(), atomic.LoadInt64(&s.requests))
}

// handleWork burns CPU for about ms milliseconds with a SHA-256 chain.
func (s *server) handleWork(w http.ResponseWriter, r *http.Request) {
	ms, err := intParam(r, "ms", 10, maxWorkMS)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	start := time.Now()
	deadline := start.Add(time.Duration(ms) * time.Millisecond)
	sum := sha256.Sum256([]byte(r.URL.RawQuery))
	rounds := 0
	for {
		for i := 0; i < 256; i++ {
			sum = sha256.Sum256(sum[:])
		}
		rounds += 256
		if !time.Now().Before(deadline) || r.Context().Err() != nil {
			break
		}
	}
	fmt.Fprintf(w, "worked %v, %d rounds, hash %s\n",
		time.Since(start).Round(time.Microsecond), rounds, hex.EncodeToString(sum[:8]))
}

// handleAlloc allocates kb KiB, touches every page and keeps the buffer in a
// bounded ring (the oldest buffer is dropped).
func (s *server) handleAlloc(w http.ResponseWriter, r *http.Request) {
	kb, err := intParam(r, "kb", 64, maxAllocKB)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	b := make([]byte, kb*1024)
	for i := 0; i < len(b); i += 4096 {
		b[i] = byte(i)
	}
	total := s.retained.put(b)
	fmt.Fprintf(w, "allocated %d KiB, retaining %d KiB in %d slots\n", kb, total/1024, ringSlots)
}

func (s *server) handleSleep(w http.ResponseWriter, r *http.Request) {
	ms, err := intParam(r, "ms", 100, maxSleepMS)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	t := time.NewTimer(time.Duration(ms) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
		fmt.Fprintf(w, "slept %d ms\n", ms)
	case <-r.Context().Done():
	}
}

// selfLoad runs one load-generator goroutine: every ~interval (jittered) it
// requests a random endpoint of base until ctx is done.
func selfLoad(ctx context.Context, id int, base string, interval time.Duration, client *http.Client) {
	rng := rand.New(rand.NewSource(time.Now().UnixNano() + int64(id)))
	for {
		wait := interval/2 + time.Duration(rng.Int63n(int64(interval)))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		var path string
		switch rng.Intn(4) {
		case 0:
			path = "/"
		case 1:
			path = fmt.Sprintf("/work?ms=%d", 5+rng.Intn(20))
		case 2:
			path = fmt.Sprintf("/alloc?kb=%d", 16+rng.Intn(512))
		default:
			path = fmt.Sprintf("/sleep?ms=%d", 10+rng.Intn(100))
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		if err != nil {
			continue
		}
		resp, err := client.Do(req)
		if err != nil {
			if ctx.Err() == nil {
				log.Printf("selfload %d: %v", id, err)
			}
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// loopbackURL turns a listener address into a URL this process can dial:
// an unspecified host (":8088", "0.0.0.0:8088", "[::]:8088") becomes loopback.
func loopbackURL(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return "http://" + addr.String()
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		if ip != nil && ip.To4() == nil {
			host = "::1"
		} else {
			host = "127.0.0.1"
		}
	}
	return "http://" + net.JoinHostPort(host, port)
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8088", "address to listen on (host:port; port 0 picks a free one)")
	selfload := flag.Bool("selfload", true, "call our own endpoints in the background")
	workers := flag.Int("selfload-workers", 4, "number of self-load goroutines")
	interval := flag.Duration("selfload-interval", time.Second, "mean pause between requests of each self-load goroutine")
	flag.Parse()
	log.SetPrefix("ferret-demo: ")
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("listen: %v", err)
	}
	s := &server{}
	mux := http.NewServeMux()
	mux.HandleFunc("/", s.count(s.handleRoot))
	mux.HandleFunc("/work", s.count(s.handleWork))
	mux.HandleFunc("/alloc", s.count(s.handleAlloc))
	mux.HandleFunc("/sleep", s.count(s.handleSleep))
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		// Requests see ctx, so a signal also ends in-flight /sleep and /work
		// early and Shutdown does not wait for them.
		BaseContext: func(net.Listener) context.Context { return ctx },
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Printf("listening on %s (pid %d)", ln.Addr(), os.Getpid())

	var wg sync.WaitGroup
	if *selfload && *workers > 0 && *interval > 0 {
		base := loopbackURL(ln.Addr())
		client := &http.Client{Timeout: 30 * time.Second}
		for i := 0; i < *workers; i++ {
			wg.Add(1)
			go func(id int) {
				defer wg.Done()
				selfLoad(ctx, id, base, *interval, client)
			}(i)
		}
		log.Printf("self-load: %d workers against %s", *workers, base)
	}

	exitCode := 0
	select {
	case <-ctx.Done():
		log.Printf("signal received, shutting down")
	case err := <-serveErr:
		log.Printf("serve: %v", err)
		exitCode = 1
		stop()
	}
	wg.Wait()
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Printf("shutdown: %v", err)
		exitCode = 1
	}
	log.Printf("bye (%d requests served)", atomic.LoadInt64(&s.requests))
	if exitCode != 0 {
		os.Exit(exitCode)
	}
}
