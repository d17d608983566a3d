// Boehm's GCBench (after John Ellis and Pete Kovac) on Go's collector: the same algorithm,
// options and check output as bench/src/bin/gc_gcbench.rs (see there).

package main

import (
	"fmt"
	"os"
	"sync"
	"time"
)

const (
	arraySize    = 500000
	minTreeDepth = 4
	nodeBytes    = 24
)

type node struct {
	left, right *node
	i, j        int32
}

func treeSize(depth int) int { return (1 << (depth + 1)) - 1 }

func populate(depth int, n *node) {
	if depth <= 0 {
		return
	}
	n.left = &node{}
	n.right = &node{}
	populate(depth-1, n.left)
	populate(depth-1, n.right)
}

func makeTree(depth int) *node {
	if depth <= 0 {
		return &node{}
	}
	return &node{left: makeTree(depth - 1), right: makeTree(depth - 1)}
}

func (n *node) count() uint64 {
	c := uint64(1)
	if n.left != nil {
		c += n.left.count()
	}
	if n.right != nil {
		c += n.right.count()
	}
	return c
}

func liveHeap(mib int) *node {
	nodes := (mib << 20) / nodeBytes
	var spine *node
	for i := 0; i < (nodes+treeSize(16)-1)/treeSize(16); i++ {
		spine = &node{left: makeTree(16), right: spine}
	}
	return spine
}

func countLive(s *node) uint64 {
	var n uint64
	for ; s != nil; s = s.right {
		n += s.left.count()
	}
	return n
}

func construct(iters, depth int) (top, bottom uint64) {
	for i := 0; i < iters; i++ {
		t := &node{}
		populate(depth, t)
		top = t.count()
	}
	for i := 0; i < iters; i++ {
		bottom = makeTree(depth).count()
	}
	return
}

func timeConstruction(depth, stretch, threads int) {
	iters := 2 * treeSize(stretch) / treeSize(depth)
	fmt.Printf("Creating %d trees of depth %d\n", iters, depth)
	var top, bottom uint64
	if threads == 1 {
		top, bottom = construct(iters, depth)
	} else {
		tops, bottoms := make([]uint64, threads), make([]uint64, threads)
		var wg sync.WaitGroup
		for t := 0; t < threads; t++ {
			wg.Add(1)
			go func(t int) {
				defer wg.Done()
				tops[t], bottoms[t] = construct(share(iters, threads, t), depth)
			}(t)
		}
		wg.Wait()
		for t := 0; t < threads; t++ {
			if tops[t] > top {
				top = tops[t]
			}
			if bottoms[t] > bottom {
				bottom = bottoms[t]
			}
		}
	}
	fmt.Printf("\tTop down construction: last tree has %d nodes\n", top)
	fmt.Printf("\tBottom up construction: last tree has %d nodes\n", bottom)
}

func main() {
	o := parse(16)
	t0 := time.Now()
	live := liveHeap(o.liveMiB)
	longLivedDepth, maxDepth, stretch := o.depth, o.depth, o.depth+2
	fmt.Println("Garbage Collector Test")
	fmt.Printf(" Live storage will peak at %d bytes.\n\n", 2*nodeBytes*treeSize(longLivedDepth)+8*arraySize)
	fmt.Printf(" Stretching memory with a binary tree of depth %d\n", stretch)
	fmt.Printf("\tstretch tree has %d nodes\n", makeTree(stretch).count())

	fmt.Printf(" Creating a long-lived binary tree of depth %d\n", longLivedDepth)
	longLived := &node{}
	populate(longLivedDepth, longLived)

	fmt.Printf(" Creating a long-lived array of %d doubles\n", arraySize)
	array := make([]float64, arraySize)
	for i := 0; i < arraySize/2; i++ {
		array[i] = 1.0 / float64(i)
	}

	for d := minTreeDepth; d <= maxDepth; d += 2 {
		timeConstruction(d, stretch, o.threads)
	}

	if array[1000] != 1.0/1000 {
		fmt.Printf("Failed: array[1000] = %g\n", array[1000])
		os.Exit(1)
	}
	fmt.Printf("long-lived tree has %d nodes\n", longLived.count())
	if o.liveMiB > 0 {
		fmt.Printf("live heap of %d MiB\t nodes: %d\n", o.liveMiB, countLive(live))
	}
	report("gcbench", o, t0)
}
