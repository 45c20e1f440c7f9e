package store

import (
	"fmt"
	"io"
	"os"
)

// SnapshotReader returns a snapshot's whole image as a stream: its data
// extents read from the file, its holes as zeros made in memory, so that
// a sparse image of many GiB costs only the reads of its data. The caller
// closes it; it stays readable if the snapshot is deleted meanwhile.
func (s *Store) SnapshotReader(id string) (io.ReadCloser, int64, error) {
	size, extents, err := s.SnapshotExtents(id)
	if err != nil {
		return nil, 0, err
	}
	f, _, err := s.OpenSnapshot(id)
	if err != nil {
		return nil, 0, err
	}
	return &sparseReader{f: f, size: size, extents: extents}, size, nil
}

// sparseReader reads f up to size, with every byte outside extents a zero
// that is not read from f.
type sparseReader struct {
	f       *os.File
	size    int64
	extents []Extent // sorted, not overlapping
	off     int64
}

var zeros = make([]byte, 1<<20)

func (r *sparseReader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	for len(r.extents) > 0 && r.extents[0].Offset+r.extents[0].Length <= r.off {
		r.extents = r.extents[1:]
	}
	limit := r.size - r.off
	if len(r.extents) > 0 && r.extents[0].Offset <= r.off { // in data
		limit = min(limit, r.extents[0].Offset+r.extents[0].Length-r.off)
		n, err := r.f.ReadAt(p[:min(int64(len(p)), limit)], r.off)
		r.off += int64(n)
		if err == io.EOF && n > 0 {
			err = nil
		}
		if err != nil {
			return n, fmt.Errorf("read snapshot at %d: %w", r.off, err)
		}
		return n, nil
	}
	if len(r.extents) > 0 { // in a hole before the next extent
		limit = min(limit, r.extents[0].Offset-r.off)
	}
	n := copy(p[:min(int64(len(p)), limit)], zeros)
	r.off += int64(n)
	return n, nil
}

func (r *sparseReader) Close() error { return r.f.Close() }
