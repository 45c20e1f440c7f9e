package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// silentHost listens on loopback, accepts connections and never says a word,
// like a host whose libvirtd is wedged. It returns a libvirt URI for it.
func silentHost(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return fmt.Sprintf("qemu+tcp://%s/system", ln.Addr())
}

func TestHostThatNeverAnswersFailsWithinTheConnectTimeout(t *testing.T) {
	t.Parallel()
	uri := silentHost(t)
	pool := NewPool(Options{ConnectTimeout: time.Second})
	t.Cleanup(func() { pool.Close() })

	start := time.Now()
	_, err := pool.Host(context.Background(), uri)
	took := time.Since(start)
	if err == nil {
		t.Fatal("Host of a silent host succeeded")
	}
	if took > 3*time.Second {
		t.Errorf("Host took %s, want about the 1s connect timeout", took)
	}
	if !strings.Contains(err.Error(), uri) {
		t.Errorf("error %q does not name the URI %s", err, uri)
	}
}

func TestHostThatNeverAnswersFailsWhenTheContextEnds(t *testing.T) {
	t.Parallel()
	uri := silentHost(t)
	pool := NewPool(Options{ConnectTimeout: time.Minute})
	t.Cleanup(func() { pool.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := pool.Host(ctx, uri)
	if err == nil {
		t.Fatal("Host of a silent host succeeded")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %q does not say the deadline passed", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Host took %s, want about the 0.5s deadline", took)
	}
}

func TestHostNobodyListensOnFailsAtOnce(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	uri := "qemu+tcp://" + addr + "/system"
	pool := NewPool(Options{})
	t.Cleanup(func() { pool.Close() })

	start := time.Now()
	_, err = pool.Host(context.Background(), uri)
	if err == nil {
		t.Fatal("Host of a closed port succeeded")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Host took %s for a refused connection", took)
	}
	if !strings.Contains(err.Error(), uri) {
		t.Errorf("error %q does not name the URI %s", err, uri)
	}
}

func TestConnectionIsOpenedOnceAndReused(t *testing.T) {
	t.Parallel()
	uri := newTestHost(t)
	pool := NewPool(Options{})
	t.Cleanup(func() { pool.Close() })

	if n := len(pool.conns); n != 0 {
		t.Fatalf("a new pool holds %d connections, want none", n)
	}
	if _, err := pool.Host(context.Background(), uri); err != nil {
		t.Fatal(err)
	}
	first := pool.conns[uri]
	if _, err := pool.Host(context.Background(), uri); err != nil {
		t.Fatal(err)
	}
	if second := pool.conns[uri]; second != first || first == nil {
		t.Errorf("second call used connection %p, want the first one %p", second, first)
	}
}

func TestClosedPoolRefusesCalls(t *testing.T) {
	t.Parallel()
	uri := newTestHost(t)
	pool := NewPool(Options{})
	if _, err := pool.Host(context.Background(), uri); err != nil {
		t.Fatal(err)
	}
	if err := pool.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Host(context.Background(), uri); !errors.Is(err, ErrClosed) {
		t.Errorf("Host after Close = %v, want ErrClosed", err)
	}
}
