package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/vigie-vms/vigie/node"
)

func runNode(args []string) error {
	fs := newFlagSet("node", "node [--config node.yaml] [--key value ...]\n\nEvery setting can also be given as VIGIE_<KEY> in the environment.")
	cfg, err := node.Load(fs, args, os.LookupEnv)
	if err != nil {
		return err
	}
	ctx, stop := signalContext()
	defer stop()
	n, err := node.New(cfg, nil)
	if err != nil {
		return err
	}
	if err := n.Start(ctx); err != nil {
		return err
	}
	fmt.Printf("Vigie node %s is running.\n  API:     http://%s/v1/cameras\n  OpenAPI: http://%s/openapi.json\n  gRPC:    %s\n  Metrics: http://%s/metrics\nPress Ctrl-C to stop.\n",
		cfg.NodeID, n.HTTPAddr(), n.HTTPAddr(), n.GRPCAddr(), n.HTTPAddr())
	<-ctx.Done()
	fmt.Println("stopping: sealing open segments…")
	return n.Close()
}

// signalContext is cancelled at the first SIGINT or SIGTERM; a second one kills the
// process at once.
func signalContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ch
		cancel()
		<-ch
		os.Exit(130)
	}()
	return ctx, func() { signal.Stop(ch); cancel() }
}
