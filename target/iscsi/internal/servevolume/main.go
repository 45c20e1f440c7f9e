// Command servevolume serves one scratch volume over iSCSI until it is
// interrupted, for running initiator tools (iscsi-test-cu, iscsi-inq,
// qemu-io) against the engine by hand:
//
//	go run ./target/iscsi/internal/servevolume -listen 127.0.0.1:3270
//	iscsi-test-cu --dataloss -t iSCSI.iSCSITMF iscsi://127.0.0.1:3270/iqn.2026-11.io.drover:debug/0
//
// The volume is a sparse file in a temporary directory, removed on exit.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/drover/terraform-provider-drover/target/iscsi"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "servevolume:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("servevolume", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:3270", "iSCSI portal address (loopback)")
	size := fs.Int64("size-mib", 64, "volume size in MiB")
	initiators := fs.String("initiators", "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test,iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2,iqn.2026-11.io.drover.test:initiator-a",
		"comma-separated initiator IQNs allowed to log in (default: libiscsi's test names and the tests' own)")
	debug := fs.Bool("debug", false, "log at debug level")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "servevolume-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "debug.raw")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		return err
	}
	if err := os.Truncate(path, *size<<20); err != nil {
		return err
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	e, err := iscsi.New(iscsi.Config{Listen: *listen, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))})
	if err != nil {
		return err
	}
	defer e.Close()
	ex := iscsi.Export{Name: "debug", IQN: "iqn.2026-11.io.drover:debug", Path: path, Initiators: strings.Split(*initiators, ",")}
	if err := e.Add(ex); err != nil {
		return err
	}
	fmt.Printf("serving iscsi://%s/%s/0\n", e.Addr(), ex.IQN)
	<-ctx.Done()
	return nil
}
