package iscsi

import (
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"sync"
	"syscall"

	"github.com/drover/terraform-provider-drover/target/store"
	"github.com/gostor/gotgt/pkg/api"
	"golang.org/x/sys/unix"
)

// fileStore is a volume's backing file. Our handlers call its methods
// directly (pread into the response buffer, pwrite from the request buffer);
// it also implements gotgt's api.BackingStore for the commands gotgt still
// executes itself (VERIFY, PRE-FETCH).
type fileStore struct {
	path    string
	f       *os.File
	metrics *volumeMetrics
	// guard, if set, sees every change to the file's data before it is
	// made (writeAt and punch are the only places that change it).
	guard store.WriteGuard
}

var _ api.BackingStore = (*fileStore)(nil)

func openFileStore(path string, m *volumeMetrics) (*fileStore, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	return &fileStore{path: path, f: f, metrics: m}, nil
}

func (s *fileStore) size() (uint64, error) {
	fi, err := s.f.Stat()
	if err != nil {
		return 0, err
	}
	if !fi.Mode().IsRegular() {
		return 0, fmt.Errorf("%s is not a regular file", s.path)
	}
	return uint64(fi.Size()) &^ (blockSize - 1), nil
}

func (s *fileStore) readAt(b []byte, off int64) error {
	n, err := s.f.ReadAt(b, off)
	if errors.Is(err, io.EOF) {
		clear(b[n:])
		return nil
	}
	return err
}

// errWouldBlock is readAtNoWait's answer when the data is not all in the
// page cache.
var errWouldBlock = errors.New("data not in the page cache")

// readAtNoWait reads like readAt when the whole range is in the page cache
// (preadv2 with RWF_NOWAIT) and returns errWouldBlock, rather than wait for
// the disk, otherwise. Any other failure or short read (end of file, a kernel
// without RWF_NOWAIT) is errWouldBlock too: readAt then does it properly.
func (s *fileStore) readAtNoWait(b []byte, off int64) error {
	n, err := unix.Preadv2(int(s.f.Fd()), [][]byte{b}, off, unix.RWF_NOWAIT)
	if err != nil || n != len(b) {
		return errWouldBlock
	}
	return nil
}

func (s *fileStore) writeAt(b []byte, off int64) error {
	if s.guard != nil {
		s.guard.BeforeWrite(off, int64(len(b)))
	}
	_, err := s.f.WriteAt(b, off)
	return err
}

func (s *fileStore) sync() error { return syscall.Fdatasync(int(s.f.Fd())) }

// punch deallocates a range; reads of it return zeros afterwards.
func (s *fileStore) punch(off, length int64) error {
	const punchHole, keepSize = 0x02, 0x01
	if s.guard != nil {
		s.guard.BeforeWrite(off, length)
	}
	return syscall.Fallocate(int(s.f.Fd()), punchHole|keepSize, off, length)
}

// extentAt reports whether off is in allocated data and where that extent
// (of data or of hole) ends, capped at limit.
func (s *fileStore) extentAt(off, limit int64) (mapped bool, end int64, err error) {
	const seekData, seekHole = 3, 4
	fd := int(s.f.Fd())
	data, err := syscall.Seek(fd, off, seekData)
	if errors.Is(err, syscall.ENXIO) {
		return false, limit, nil
	}
	if err != nil {
		return false, 0, err
	}
	if data > off {
		return false, min(data, limit), nil
	}
	hole, err := syscall.Seek(fd, off, seekHole)
	if err != nil {
		return false, 0, err
	}
	return true, min(hole, limit), nil
}

func (s *fileStore) close() error {
	err := s.sync()
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// api.BackingStore, for gotgt's own handlers.

func (s *fileStore) Open(*api.SCSILu, string) error        { return nil }
func (s *fileStore) Close(*api.SCSILu) error               { return nil }
func (s *fileStore) Init(*api.SCSILu, string) error        { return nil }
func (s *fileStore) Exit(*api.SCSILu) error                { return nil }
func (s *fileStore) DataAdvise(int64, int64, uint32) error { return nil }
func (s *fileStore) Size(*api.SCSILu) uint64 {
	n, _ := s.size()
	return n
}
func (s *fileStore) Read(off, tl int64) ([]byte, error) {
	b := make([]byte, tl)
	return b, s.readAt(b, off)
}
func (s *fileStore) Write(b []byte, off int64) error { return s.writeAt(b, off) }
func (s *fileStore) DataSync(int64, int64) error     { return s.sync() }
func (s *fileStore) Unmap(descs []api.UnmapBlockDescriptor) error {
	for _, d := range descs {
		if err := s.punch(int64(d.Offset), int64(d.TL)); err != nil {
			return err
		}
	}
	return nil
}

// Read buffers are pooled by power-of-two size class: a 1 MiB read would
// otherwise allocate and zero 1 MiB per command and keep the GC busy.
var bufferPools [25]sync.Pool

func getBuffer(n int) ([]byte, func()) {
	if n == 0 {
		return nil, func() {}
	}
	class := bits.Len(uint(n - 1))
	if class >= len(bufferPools) {
		return make([]byte, n), func() {}
	}
	p := &bufferPools[class]
	bp, _ := p.Get().(*[]byte)
	if bp == nil {
		b := make([]byte, 1<<class)
		bp = &b
	}
	return (*bp)[:n], func() { p.Put(bp) }
}
