package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"libvirt.org/go/libvirt"
)

// DefaultConnectTimeout bounds the opening of a connection when neither the
// caller's context nor Options say otherwise. libvirt's own connect can block
// for minutes on a host that drops packets.
const DefaultConnectTimeout = 10 * time.Second

// closeTimeout bounds how long Close waits for a host to acknowledge the end
// of its connection; a dead host never does.
const closeTimeout = 5 * time.Second

// ErrClosed is returned by a Pool that has been closed.
var ErrClosed = errors.New("hypervisor: pool is closed")

// Options tune a Pool. The zero value is usable.
type Options struct {
	// ConnectTimeout bounds the opening of one connection
	// (DefaultConnectTimeout when zero).
	ConnectTimeout time.Duration
}

// Pool holds one libvirt connection per host URI. A connection is opened on
// first use, reused by later calls and reopened when libvirt reports it dead.
// A Pool is safe for concurrent use; Close releases every connection.
type Pool struct {
	connectTimeout time.Duration

	mu     sync.Mutex // guards conns, closed and the users/evicted fields of every conn
	conns  map[string]*conn
	closed bool

	dirsMu sync.Mutex      // guards dirs
	dirs   map[string]bool // "uri\x00folder": log folders known to exist (see ensureLogDirs)
}

// conn is one open libvirt connection and the calls currently using it. An
// evicted conn is no longer handed out; the last user closes it, so a call
// stuck on a dead host never has its connection freed under it.
type conn struct {
	uri     string
	lv      *libvirt.Connect
	users   int
	evicted bool
}

// NewPool returns a Pool that opens no connection until one is needed.
func NewPool(opts Options) *Pool {
	timeout := opts.ConnectTimeout
	if timeout <= 0 {
		timeout = DefaultConnectTimeout
	}
	return &Pool{connectTimeout: timeout, conns: make(map[string]*conn), dirs: make(map[string]bool)}
}

// Close closes every connection that no call is using and marks the others to
// be closed when their call returns. Later calls fail with ErrClosed. Close
// waits a few seconds at most for hosts to acknowledge.
func (p *Pool) Close() error {
	p.mu.Lock()
	p.closed = true
	var idle []*libvirt.Connect
	for uri, c := range p.conns {
		delete(p.conns, uri)
		c.evicted = true
		if c.users == 0 {
			idle = append(idle, c.lv)
		}
	}
	p.mu.Unlock()

	var wg sync.WaitGroup
	for _, lv := range idle {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = lv.Close()
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(closeTimeout):
	}
	return nil
}

// do runs fn with the connection to uri, opening it if needed. It returns when
// fn does or when ctx is done, whichever comes first; in the second case the
// connection is dropped from the pool (a host that stopped answering is
// reconnected on next use) and closed once fn finally returns.
func (p *Pool) do(ctx context.Context, uri string, fn func(*libvirt.Connect) error) error {
	c, err := p.acquire(ctx, uri)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() {
		err := fn(c.lv)
		if err != nil {
			if alive, aerr := c.lv.IsAlive(); aerr != nil || !alive || connectionLost(err) {
				p.evict(c)
			}
		}
		p.release(c)
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		p.evict(c)
		return fmt.Errorf("%s: no answer: %w", uri, context.Cause(ctx))
	}
}

// read is do for an fn that only reads. A connection whose host's libvirtd
// went away since its last use looks alive until it is used (nothing runs
// libvirt's event loop to notice sooner) and then fails: read drops it and
// runs fn once more on a new connection.
func (p *Pool) read(ctx context.Context, uri string, fn func(*libvirt.Connect) error) error {
	err := p.do(ctx, uri, fn)
	if err != nil && connectionLost(err) && ctx.Err() == nil {
		return p.do(ctx, uri, fn)
	}
	return err
}

// connectionLost tells whether err is libvirt's client library saying the
// connection broke (as opposed to the host answering with an error).
func connectionLost(err error) bool {
	var lv libvirt.Error
	return errors.As(err, &lv) && lv.Domain == libvirt.FROM_RPC
}

// acquire returns a live connection to uri with one more user.
func (p *Pool) acquire(ctx context.Context, uri string) (*conn, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrClosed
	}
	if c := p.conns[uri]; c != nil {
		// IsAlive is a local check: it reads the state of the socket and
		// sends nothing to the host.
		if alive, err := c.lv.IsAlive(); err == nil && alive {
			c.users++
			p.mu.Unlock()
			return c, nil
		}
		p.evictLocked(c)
	}
	p.mu.Unlock()

	lv, err := p.open(ctx, uri)
	if err != nil {
		return nil, err
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		go lv.Close()
		return nil, ErrClosed
	}
	if c := p.conns[uri]; c != nil {
		// Another call opened the same host meanwhile: keep theirs.
		go lv.Close()
		c.users++
		return c, nil
	}
	c := &conn{uri: uri, lv: lv, users: 1}
	p.conns[uri] = c
	return c, nil
}

// open connects to uri within the pool's connect timeout and ctx. libvirt's
// connect is a blocking cgo call that cannot be interrupted, so it runs in a
// goroutine; when it is abandoned, that goroutine closes whatever it gets.
func (p *Pool) open(ctx context.Context, uri string) (*libvirt.Connect, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, p.connectTimeout,
		fmt.Errorf("no answer within %s", p.connectTimeout))
	defer cancel()

	type result struct {
		lv  *libvirt.Connect
		err error
	}
	ch := make(chan result, 1)
	go func() {
		lv, err := libvirt.NewConnect(uri)
		ch <- result{lv, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("connect to %s: %s", uri, errorMessage(r.err))
		}
		return r.lv, nil
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.lv != nil {
				_, _ = r.lv.Close()
			}
		}()
		return nil, fmt.Errorf("connect to %s: %w", uri, context.Cause(ctx))
	}
}

func (p *Pool) release(c *conn) {
	p.mu.Lock()
	c.users--
	closeIt := c.evicted && c.users == 0
	p.mu.Unlock()
	if closeIt {
		_, _ = c.lv.Close()
	}
}

func (p *Pool) evict(c *conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.evictLocked(c)
}

// evictLocked drops c from the pool; p.mu must be held. The connection is
// closed now if nobody uses it, else by its last user.
func (p *Pool) evictLocked(c *conn) {
	if c.evicted {
		return
	}
	c.evicted = true
	if p.conns[c.uri] == c {
		delete(p.conns, c.uri)
	}
	if c.users == 0 {
		// Closing talks to the host, which may be the one not answering.
		go c.lv.Close()
	}
}

// errorMessage returns libvirt's message without the code and domain noise
// of libvirt.Error's own formatting.
func errorMessage(err error) string {
	var lerr libvirt.Error
	if errors.As(err, &lerr) && lerr.Message != "" {
		return lerr.Message
	}
	return err.Error()
}
