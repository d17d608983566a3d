// Shared by binarytrees.go and gcbench.go: options, pauses, the RESULT line. Same output
// contract as bench/src/gcprog.rs (see there). Pauses are runtime.MemStats.PauseNs, Go's
// circular buffer of the last 256 cycles' stop-the-world time (both pauses of a cycle added).
// Build each program with this file: go build -o binarytrees-go binarytrees.go common.go

package main

import (
	"flag"
	"fmt"
	"runtime"
	"sort"
	"syscall"
	"time"
)

type opts struct {
	depth, threads, liveMiB int
}

func parse(defaultDepth int) opts {
	var o opts
	flag.IntVar(&o.depth, "depth", defaultDepth, "tree depth")
	flag.IntVar(&o.threads, "threads", 1, "threads (goroutines) building short-lived trees")
	flag.IntVar(&o.liveMiB, "live-mib", 0, "extra MiB kept live as trees")
	flag.Parse()
	if o.threads < 1 {
		o.threads = 1
	}
	return o
}

// percentile is the nearest rank, as gcprog::percentile.
func percentile(sorted []uint64, p uint64) uint64 {
	n := uint64(len(sorted))
	if n == 0 {
		return 0
	}
	rank := (p*n + 99) / 100
	if rank < 1 {
		rank = 1
	}
	return sorted[rank-1]
}

func share(n, threads, t int) int {
	s := n / threads
	if t < n%threads {
		s++
	}
	return s
}

func report(prog string, o opts, t0 time.Time) {
	wall := time.Since(t0)
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	n := int(m.NumGC)
	if n > 256 {
		n = 256
	}
	recent := make([]uint64, 0, n)
	for k := 0; k < n; k++ {
		recent = append(recent, m.PauseNs[(int(m.NumGC)+255-k)%256])
	}
	sort.Slice(recent, func(i, j int) bool { return recent[i] < recent[j] })
	var max uint64
	if n > 0 {
		max = recent[n-1]
	}
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	fmt.Printf("RESULT impl=go prog=%s depth=%d threads=%d live_mib=%d scan_malloc=1 wall_ms=%.1f "+
		"num_gc=%d pause_max_us=%.1f pause_median_us=%.1f pause_p99_us=%.1f "+
		"pause_total_ms=%.1f peak_rss_kib=%d\n",
		prog, o.depth, o.threads, o.liveMiB, float64(wall.Nanoseconds())/1e6, m.NumGC,
		float64(max)/1e3, float64(percentile(recent, 50))/1e3, float64(percentile(recent, 99))/1e3,
		float64(m.PauseTotalNs)/1e6, ru.Maxrss)
}
