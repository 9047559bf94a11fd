// Command recbench measures the CPU a Vigie node spends per camera-second of recording
// against a bare gortsplib receiver of the same streams, and the time to first byte of
// playback (see package loadtest/recbench for the method).
//
//	go run ./loadtest/cmd/recbench -cameras 50,200            # what `make bench` runs
//	go run ./loadtest/cmd/recbench -cameras 200 -perf -keep   # with a perf profile of the node
//	go run ./loadtest/cmd/recbench -append BENCHMARKS.md      # append the Markdown section
//
// It prints progress on stderr, then a table and a Markdown section on stdout. It needs
// Linux (/proc), taskset (unless -no-pin), ffmpeg (unless -clip is given), the go tool
// (unless -vigie is given) and perf for -perf. A run of 50 and 200 cameras takes about
// three minutes.
//
// The hidden subcommands "fleet" and "bare" are the processes recbench starts (re-executing
// itself, pinned to a core); they speak a line protocol on stdin/stdout and are not meant
// to be run by hand.
//
// It must not be pointed at anything but 127.0.0.1, and it never edits BENCHMARKS.md
// unless -append says so.
package main
