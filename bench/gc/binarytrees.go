// The Benchmarks Game's binary-trees on Go's collector: the same algorithm, options and output
// as bench/src/bin/gc_binarytrees.rs (see there).

package main

import (
	"fmt"
	"sync"
	"time"
)

type node struct {
	left, right *node
}

func bottomUp(depth int) *node {
	if depth <= 0 {
		return &node{}
	}
	return &node{bottomUp(depth - 1), bottomUp(depth - 1)}
}

func (n *node) check() uint64 {
	if n.left == nil {
		return 1
	}
	return 1 + n.left.check() + n.right.check()
}

func liveHeap(mib int) *node {
	nodes := (mib << 20) >> 4
	perTree := (1 << 17) - 1
	var spine *node
	for i := 0; i < (nodes+perTree-1)/perTree; i++ {
		spine = &node{bottomUp(16), spine}
	}
	return spine
}

func countLive(s *node) uint64 {
	var n uint64
	for ; s != nil; s = s.right {
		n += s.left.check()
	}
	return n
}

func shortLived(iterations, d, threads int) uint64 {
	work := func(n int) uint64 {
		var sum uint64
		for i := 0; i < n; i++ {
			sum += bottomUp(d).check()
		}
		return sum
	}
	if threads == 1 {
		return work(iterations)
	}
	sums := make([]uint64, threads)
	var wg sync.WaitGroup
	for t := 0; t < threads; t++ {
		wg.Add(1)
		go func(t int) {
			defer wg.Done()
			sums[t] = work(share(iterations, threads, t))
		}(t)
	}
	wg.Wait()
	var sum uint64
	for _, s := range sums {
		sum += s
	}
	return sum
}

func main() {
	o := parse(16)
	t0 := time.Now()
	live := liveHeap(o.liveMiB)
	minDepth := 4
	maxDepth := o.depth
	if maxDepth < minDepth+2 {
		maxDepth = minDepth + 2
	}
	stretch := maxDepth + 1
	fmt.Printf("stretch tree of depth %d\t check: %d\n", stretch, bottomUp(stretch).check())
	longLived := bottomUp(maxDepth)
	for d := minDepth; d <= maxDepth; d += 2 {
		iterations := 1 << (maxDepth - d + minDepth)
		sum := shortLived(iterations, d, o.threads)
		fmt.Printf("%d\t trees of depth %d\t check: %d\n", iterations, d, sum)
	}
	fmt.Printf("long lived tree of depth %d\t check: %d\n", maxDepth, longLived.check())
	if o.liveMiB > 0 {
		fmt.Printf("live heap of %d MiB\t nodes: %d\n", o.liveMiB, countLive(live))
	}
	report("binarytrees", o, t0)
}
