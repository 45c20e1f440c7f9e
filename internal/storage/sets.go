package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/drover/terraform-provider-drover/target/api/wire"
)

// maxAttachment bounds what SnapshotSetAttachment reads: the target keeps
// at most 1 MiB of attachments per set.
const maxAttachment = 1 << 20

// CreateSnapshotSet snapshots several volumes at one instant: the target
// holds their writes while it cuts them (at most 10 s by default; it
// answers 503 if it could not hold them long enough, and nothing is made).
// A missing volume gives an error that errors.Is(err, ErrNotFound).
func (c *Client) CreateSnapshotSet(ctx context.Context, req wire.CreateSnapshotSetRequest) (wire.SnapshotSet, error) {
	var s wire.SnapshotSet
	err := c.do(ctx, http.MethodPost, "/v1/snapshot-sets", req, &s)
	return s, err
}

// ListSnapshotSets returns the snapshot sets that carry every one of labels
// (all sets when labels is empty), newest first.
func (c *Client) ListSnapshotSets(ctx context.Context, labels map[string]string) ([]wire.SnapshotSet, error) {
	p := "/v1/snapshot-sets"
	if len(labels) > 0 {
		keys := make([]string, 0, len(labels))
		for k := range labels {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		q := url.Values{}
		for _, k := range keys {
			q.Add("label", k+"="+labels[k])
		}
		p += "?" + q.Encode()
	}
	var out wire.SnapshotSetList
	err := c.do(ctx, http.MethodGet, p, nil, &out)
	return out.SnapshotSets, err
}

// GetSnapshotSet returns a snapshot set (ErrNotFound if it is gone).
func (c *Client) GetSnapshotSet(ctx context.Context, id string) (wire.SnapshotSet, error) {
	var s wire.SnapshotSet
	err := c.do(ctx, http.MethodGet, "/v1/snapshot-sets/"+url.PathEscape(id), nil, &s)
	return s, err
}

// SetSnapshotSetLabels replaces all the labels of a snapshot set with labels
// (nil or empty removes them) and returns the set. Labels follow the rules
// of CreateSnapshotSetRequest; a set that is gone gives an error that
// errors.Is(err, ErrNotFound).
func (c *Client) SetSnapshotSetLabels(ctx context.Context, id string, labels map[string]string) (wire.SnapshotSet, error) {
	if labels == nil {
		labels = map[string]string{} // the target takes a missing or null "labels" for a mistake
	}
	body := wire.UpdateSnapshotSetRequest{Labels: labels}
	var s wire.SnapshotSet
	err := c.do(ctx, http.MethodPatch, "/v1/snapshot-sets/"+url.PathEscape(id), body, &s)
	return s, err
}

// SnapshotSetAttachment returns the content of one attachment of a set.
func (c *Client) SnapshotSetAttachment(ctx context.Context, id, name string) ([]byte, error) {
	req, err := c.request(ctx, http.MethodGet, "/v1/snapshot-sets/"+url.PathEscape(id)+"/attachments/"+url.PathEscape(name), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET attachment %s of snapshot set %s: %w", name, id, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, apiError(resp)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAttachment+1))
	if err != nil {
		return nil, fmt.Errorf("GET attachment %s of snapshot set %s: %w", name, id, err)
	}
	if len(b) > maxAttachment {
		return nil, fmt.Errorf("attachment %s of snapshot set %s is larger than %d bytes", name, id, maxAttachment)
	}
	return b, nil
}

// DeleteSnapshotSet deletes a snapshot set with all its snapshots.
func (c *Client) DeleteSnapshotSet(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/snapshot-sets/"+url.PathEscape(id), nil, nil)
}

// SnapshotExtents returns a snapshot's size and where its data is.
func (c *Client) SnapshotExtents(ctx context.Context, id string) (wire.Extents, error) {
	var e wire.Extents
	err := c.do(ctx, http.MethodGet, "/v1/snapshots/"+url.PathEscape(id)+"/extents", nil, &e)
	return e, err
}

// mergeGap is the largest hole between two extents that one Range request
// spans: fetching up to that many zeros costs less than another request.
// The zeros are hashed but not written, so the hole stays a hole.
const mergeGap = 1 << 20

// DownloadSnapshotSparse downloads a snapshot into f as a sparse raw image:
// f is emptied, only the snapshot's data extents are fetched (with HTTP
// Range requests) and written at their offsets, and f is then sized to the
// snapshot, so the holes stay holes. It returns the SHA-256 (hex) of the
// whole image as read from offset 0 to its end, holes as zeros, which is
// also the hash of f's content; f is synced and its size checked.
func (c *Client) DownloadSnapshotSparse(ctx context.Context, id string, f *os.File) (string, error) {
	ext, err := c.SnapshotExtents(ctx, id)
	if err != nil {
		return "", err
	}
	if err := checkExtents(ext); err != nil {
		return "", fmt.Errorf("snapshot %s: %w", id, err)
	}
	if err := f.Truncate(0); err != nil {
		return "", fmt.Errorf("download snapshot %s: %w", id, err)
	}
	d := &sparseDownload{c: c, id: id, f: f, sum: sha256.New()}
	pos := int64(0) // everything before pos is hashed
	for _, g := range groupExtents(ext.Extents) {
		if err := hashZeros(d.sum, g[0].Offset-pos); err != nil {
			return "", err
		}
		if err := d.fetch(ctx, g); err != nil {
			return "", fmt.Errorf("download snapshot %s: %w", id, err)
		}
		last := g[len(g)-1]
		pos = last.Offset + last.Length
	}
	if err := hashZeros(d.sum, ext.SizeBytes-pos); err != nil {
		return "", err
	}
	if err := f.Truncate(ext.SizeBytes); err != nil {
		return "", fmt.Errorf("download snapshot %s: %w", id, err)
	}
	if err := f.Sync(); err != nil {
		return "", fmt.Errorf("download snapshot %s: %w", id, err)
	}
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("download snapshot %s: %w", id, err)
	}
	if fi.Size() != ext.SizeBytes {
		return "", fmt.Errorf("download snapshot %s: %s is %d bytes, want %d", id, f.Name(), fi.Size(), ext.SizeBytes)
	}
	return hex.EncodeToString(d.sum.Sum(nil)), nil
}

// checkExtents makes sure the extents are sorted, apart and within size,
// as the rest of the download assumes.
func checkExtents(ext wire.Extents) error {
	if ext.SizeBytes < 0 {
		return fmt.Errorf("the target reports a size of %d bytes", ext.SizeBytes)
	}
	end := int64(0)
	for i, e := range ext.Extents {
		if e.Offset < end || e.Length <= 0 || e.Offset+e.Length > ext.SizeBytes {
			return fmt.Errorf("the target reports extent %d (offset %d, length %d) out of order or beyond the size %d", i, e.Offset, e.Length, ext.SizeBytes)
		}
		end = e.Offset + e.Length
	}
	return nil
}

// groupExtents puts extents with holes of at most mergeGap between them
// into one group, fetched with one request.
func groupExtents(ext []wire.Extent) [][]wire.Extent {
	var out [][]wire.Extent
	for i, e := range ext {
		if i > 0 {
			g := out[len(out)-1]
			last := g[len(g)-1]
			if e.Offset-(last.Offset+last.Length) <= mergeGap {
				out[len(out)-1] = append(g, e)
				continue
			}
		}
		out = append(out, []wire.Extent{e})
	}
	return out
}

type sparseDownload struct {
	c    *Client
	id   string
	f    *os.File
	sum  hash.Hash
	etag string // of the first answer: all parts must come from one snapshot
}

// fetch gets the range from the first extent of g to the end of its last
// with one request, writes the extents' bytes at their offsets and hashes
// everything, the holes between them included.
func (d *sparseDownload) fetch(ctx context.Context, g []wire.Extent) error {
	from, to := g[0].Offset, g[len(g)-1].Offset+g[len(g)-1].Length
	req, err := d.c.request(ctx, http.MethodGet, "/v1/snapshots/"+url.PathEscape(d.id)+"/data", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/octet-stream")
	req.Header.Set("Range", "bytes="+strconv.FormatInt(from, 10)+"-"+strconv.FormatInt(to-1, 10))
	resp, err := d.c.http.Do(req)
	if err != nil {
		return fmt.Errorf("GET bytes %d-%d: %w", from, to-1, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent {
		if resp.StatusCode >= 300 {
			return apiError(resp)
		}
		return fmt.Errorf("GET bytes %d-%d: status %d, want 206 (the target or a proxy ignored the Range header)", from, to-1, resp.StatusCode)
	}
	if want := fmt.Sprintf("bytes %d-%d/", from, to-1); !strings.HasPrefix(resp.Header.Get("Content-Range"), want) {
		return fmt.Errorf("GET bytes %d-%d: Content-Range %q, want one starting %q", from, to-1, resp.Header.Get("Content-Range"), want)
	}
	if etag := resp.Header.Get("ETag"); d.etag == "" {
		d.etag = etag
	} else if etag != d.etag {
		return fmt.Errorf("GET bytes %d-%d: the snapshot changed during the download (ETag %s, was %s)", from, to-1, etag, d.etag)
	}
	pos := from
	for _, e := range g {
		if _, err := io.CopyN(d.sum, resp.Body, e.Offset-pos); err != nil { // the hole before e
			return fmt.Errorf("read bytes %d-%d: %w", pos, e.Offset-1, err)
		}
		w := io.MultiWriter(io.NewOffsetWriter(d.f, e.Offset), d.sum)
		if _, err := io.CopyN(w, resp.Body, e.Length); err != nil {
			return fmt.Errorf("copy bytes %d-%d: %w", e.Offset, e.Offset+e.Length-1, err)
		}
		pos = e.Offset + e.Length
	}
	return nil
}

var zeros [1 << 16]byte

// hashZeros feeds n zero bytes to h.
func hashZeros(h hash.Hash, n int64) error {
	if n < 0 {
		return fmt.Errorf("internal error: %d zeros to hash", n)
	}
	for n > 0 {
		k := min(n, int64(len(zeros)))
		h.Write(zeros[:k])
		n -= k
	}
	return nil
}
