package storage

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/drover/terraform-provider-drover/target/api/wire"
)

// UpdateVolumeRequest changes a volume; nil fields stay as they are.
// Set RemoveCHAP to stop requiring CHAP.
type UpdateVolumeRequest struct {
	SizeMiB    *int64
	Initiators *[]string
	CHAP       *wire.CHAP
	RemoveCHAP bool
}

// MarshalJSON writes u as a wire.UpdateVolumeRequest, with "chap": null
// for RemoveCHAP.
func (u UpdateVolumeRequest) MarshalJSON() ([]byte, error) {
	body := wire.UpdateVolumeRequest{SizeMiB: u.SizeMiB, Initiators: u.Initiators}
	switch {
	case u.RemoveCHAP:
		body.CHAP = json.RawMessage("null")
	case u.CHAP != nil:
		b, err := json.Marshal(u.CHAP)
		if err != nil {
			return nil, err
		}
		body.CHAP = b
	}
	return json.Marshal(body)
}

// Error is an error answer of the API.
type Error struct {
	StatusCode int
	Message    string
}

func (e *Error) Error() string {
	return fmt.Sprintf("drover-target: %s (HTTP %d)", e.Message, e.StatusCode)
}

// Is makes errors.Is(err, ErrNotFound) and friends work on API errors.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.StatusCode == http.StatusNotFound
	case ErrConflict:
		return e.StatusCode == http.StatusConflict
	case ErrUnauthorized:
		return e.StatusCode == http.StatusUnauthorized
	}
	return false
}

// Kinds of API errors, for errors.Is.
var (
	ErrNotFound     = errors.New("not found")
	ErrConflict     = errors.New("conflict")
	ErrUnauthorized = errors.New("unauthorized")
)

// Client talks to one drover-target.
type Client struct {
	base  *url.URL
	token string
	http  *http.Client
	// roots, when set, are the only CAs trusted for the target's TLS
	// certificate (WithCAFile); nil: the system's.
	roots *x509.CertPool
}

// Option tunes a Client.
type Option func(*Client) error

// WithHTTPClient replaces the default http.Client (for proxies or tests);
// it takes precedence over WithCAFile.
func WithHTTPClient(h *http.Client) Option {
	return func(c *Client) error { c.http = h; return nil }
}

// New returns a client of the API at endpoint (e.g.
// "https://storage.lan:3261") that authenticates with token.
func New(endpoint, token string, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(endpoint, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("storage endpoint %q: want http(s)://host:port", endpoint)
	}
	if token == "" {
		return nil, errors.New("storage token is empty: set it from the target's --token-file")
	}
	c := &Client{base: u, token: token}
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, err
		}
	}
	if c.http == nil {
		c.http = &http.Client{Transport: newTransport(c.roots)}
	}
	return c, nil
}

// Health checks that the target answers.
func (c *Client) Health(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/v1/health", nil, nil)
}

// CreateVolume creates (or clones) a volume and exports it.
func (c *Client) CreateVolume(ctx context.Context, req wire.CreateVolumeRequest) (wire.Volume, error) {
	var v wire.Volume
	err := c.do(ctx, http.MethodPost, "/v1/volumes", req, &v)
	return v, err
}

// GetVolume returns a volume; a missing one gives an error that
// errors.Is(err, ErrNotFound).
func (c *Client) GetVolume(ctx context.Context, name string) (wire.Volume, error) {
	var v wire.Volume
	err := c.do(ctx, http.MethodGet, "/v1/volumes/"+url.PathEscape(name), nil, &v)
	return v, err
}

// ListVolumes returns every volume, ordered by name.
func (c *Client) ListVolumes(ctx context.Context) ([]wire.Volume, error) {
	var out wire.VolumeList
	err := c.do(ctx, http.MethodGet, "/v1/volumes", nil, &out)
	return out.Volumes, err
}

// UpdateVolume grows a volume and/or changes its access settings.
func (c *Client) UpdateVolume(ctx context.Context, name string, req UpdateVolumeRequest) (wire.Volume, error) {
	var v wire.Volume
	err := c.do(ctx, http.MethodPatch, "/v1/volumes/"+url.PathEscape(name), req, &v)
	return v, err
}

// GrowVolume sets a volume's size; the target refuses to shrink.
func (c *Client) GrowVolume(ctx context.Context, name string, sizeMiB int64) (wire.Volume, error) {
	return c.UpdateVolume(ctx, name, UpdateVolumeRequest{SizeMiB: &sizeMiB})
}

// DeleteVolume deletes a volume. Without force the target refuses (with
// ErrConflict) while initiators are logged in.
func (c *Client) DeleteVolume(ctx context.Context, name string, force bool) error {
	p := "/v1/volumes/" + url.PathEscape(name)
	if force {
		p += "?force=true"
	}
	return c.do(ctx, http.MethodDelete, p, nil, nil)
}

// UploadVolume replaces a volume's content with a raw or qcow2 image
// (format "", "raw" or "qcow2"; "" lets the target detect it).
func (c *Client) UploadVolume(ctx context.Context, name string, image io.Reader, format string) error {
	p := "/v1/volumes/" + url.PathEscape(name) + "/data"
	if format != "" {
		p += "?format=" + url.QueryEscape(format)
	}
	req, err := c.request(ctx, http.MethodPut, p, image)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	return c.send(req, nil)
}

// CreateSnapshot takes a snapshot of a volume.
func (c *Client) CreateSnapshot(ctx context.Context, volume string) (wire.Snapshot, error) {
	var s wire.Snapshot
	err := c.do(ctx, http.MethodPost, "/v1/volumes/"+url.PathEscape(volume)+"/snapshots", nil, &s)
	return s, err
}

// ListSnapshots returns a volume's snapshots, oldest first.
func (c *Client) ListSnapshots(ctx context.Context, volume string) ([]wire.Snapshot, error) {
	var out wire.SnapshotList
	err := c.do(ctx, http.MethodGet, "/v1/volumes/"+url.PathEscape(volume)+"/snapshots", nil, &out)
	return out.Snapshots, err
}

// GetSnapshot returns a snapshot (ErrNotFound if it is gone).
func (c *Client) GetSnapshot(ctx context.Context, id string) (wire.Snapshot, error) {
	var s wire.Snapshot
	err := c.do(ctx, http.MethodGet, "/v1/snapshots/"+url.PathEscape(id), nil, &s)
	return s, err
}

// DeleteSnapshot deletes a snapshot.
func (c *Client) DeleteSnapshot(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/snapshots/"+url.PathEscape(id), nil, nil)
}

// DownloadSnapshot streams a snapshot's raw content; the caller closes it.
func (c *Client) DownloadSnapshot(ctx context.Context, id string) (io.ReadCloser, error) {
	req, err := c.request(ctx, http.MethodGet, "/v1/snapshots/"+url.PathEscape(id)+"/data", nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET snapshot %s data: %w", id, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, apiError(resp)
	}
	return resp.Body, nil
}

// Sessions lists the initiators logged in, on all volumes.
func (c *Client) Sessions(ctx context.Context) ([]wire.Session, error) {
	var out wire.SessionList
	err := c.do(ctx, http.MethodGet, "/v1/sessions", nil, &out)
	return out.Sessions, err
}

func (c *Client) request(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	u := c.base.String() + path
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	return req, nil
}

// do sends in (as JSON, if not nil) and decodes the answer into out (if
// not nil).
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		// Without HTML escaping, '<' stays one byte: a domain XML
		// attachment would otherwise grow six-fold.
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(in); err != nil {
			return err
		}
		body = &b
	}
	req, err := c.request(ctx, method, path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return c.send(req, out)
}

func (c *Client) send(req *http.Request, out any) error {
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return apiError(resp)
	}
	if out == nil {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", req.Method, req.URL.Path, err)
	}
	return nil
}

func apiError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var body wire.ErrorBody
	msg := strings.TrimSpace(string(b))
	if json.Unmarshal(b, &body) == nil && body.Error != "" {
		msg = body.Error
	}
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	return &Error{StatusCode: resp.StatusCode, Message: msg}
}
