package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

const copyChunk = 8 << 20

// cloneInto gives dst (empty) the content of src: by sharing blocks
// (FICLONE) when allowed and supported, else by a sparse copy. It reports
// which method it used.
func (s *Store) cloneInto(ctx context.Context, dst, src *os.File) (string, error) {
	if !s.noReflink {
		err := s.reflink(dst, src)
		if err == nil {
			return MethodReflink, nil
		}
		if !reflinkUnsupported(err) {
			return "", fmt.Errorf("reflink: %w", err)
		}
		s.log.Debug("filesystem cannot reflink; copying", "err", err)
	}
	fi, err := src.Stat()
	if err != nil {
		return "", err
	}
	if st, ok := fi.Sys().(*unix.Stat_t); ok {
		if err := s.checkFree("a copy of "+fi.Name(), st.Blocks*512); err != nil {
			return "", err
		}
	}
	if err := sparseCopy(ctx, dst, src, fi.Size()); err != nil {
		return "", err
	}
	return MethodCopy, nil
}

// reflinkUnsupported tells "this filesystem (pair) cannot reflink" apart
// from real I/O errors.
func reflinkUnsupported(err error) bool {
	for _, e := range []error{unix.EOPNOTSUPP, unix.ENOTTY, unix.EXDEV, unix.EINVAL, unix.ENOSYS, unix.EPERM} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// sparseCopy copies the data extents of src (SEEK_DATA/SEEK_HOLE) to the
// same offsets in dst, so holes stay holes, then sets dst's size.
func sparseCopy(ctx context.Context, dst, src *os.File, size int64) error {
	err := forEachDataExtent(src, size, func(from, to int64) error {
		return copyRange(ctx, dst, src, from, to)
	})
	if err != nil {
		return err
	}
	if err := dst.Truncate(size); err != nil {
		return mapNoSpace(err)
	}
	return nil
}

// forEachDataExtent calls fn with each extent [from, to) of f below size
// that holds data, in order, as SEEK_DATA and SEEK_HOLE find them. Where the
// filesystem cannot tell (no SEEK_DATA), the rest of the file is one extent.
func forEachDataExtent(f *os.File, size int64, fn func(from, to int64) error) error {
	fd := int(f.Fd())
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if errors.Is(err, unix.EINVAL) {
			data = off // no SEEK_DATA here: treat the rest as data
		} else if err != nil {
			return fmt.Errorf("find data: %w", err)
		}
		if data >= size {
			break
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			hole = size
		}
		if hole > size {
			hole = size
		}
		if err := fn(data, hole); err != nil {
			return err
		}
		off = hole
	}
	return nil
}

// copyRange copies [from, to) in chunks, in the kernel when it can.
func copyRange(ctx context.Context, dst, src *os.File, from, to int64) error {
	var buf []byte
	for off := from; off < to; {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(int64(copyChunk), to-off)
		if buf == nil {
			roff, woff := off, off
			c, err := unix.CopyFileRange(int(src.Fd()), &roff, int(dst.Fd()), &woff, int(n), 0)
			if err == nil && c > 0 {
				off += int64(c)
				continue
			}
			if err != nil && !reflinkUnsupported(err) {
				return fmt.Errorf("copy: %w", mapNoSpace(err))
			}
			buf = make([]byte, copyChunk) // the kernel declined: copy through memory
		}
		r, err := src.ReadAt(buf[:n], off)
		if r > 0 {
			if _, werr := dst.WriteAt(buf[:r], off); werr != nil {
				return fmt.Errorf("copy: %w", mapNoSpace(werr))
			}
			off += int64(r)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("copy: %w", err)
		}
	}
	return nil
}

func mapNoSpace(err error) error {
	if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) {
		return errorf(ErrNoSpace, "the data directory's filesystem is full (%v): free space and retry", err)
	}
	if errors.Is(err, unix.EFBIG) {
		return errorf(ErrNoSpace, "the data directory's filesystem cannot hold a file this large (%v)", err)
	}
	return err
}
