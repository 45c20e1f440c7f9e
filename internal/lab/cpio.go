package lab

import (
	"bufio"
	"fmt"
	"io"
	"sort"
)

// cpioEntry is one file of an initramfs: a regular file, a directory, a
// symlink or a character device.
type cpioEntry struct {
	Name  string
	Mode  uint32 // file type bits and permissions, as in stat(2)
	Data  []byte // file contents, or the link target
	Major uint32 // device numbers for character devices
	Minor uint32
}

const (
	modeDir     = 0o040000
	modeFile    = 0o100000
	modeSymlink = 0o120000
	modeCharDev = 0o020000
)

// writeCPIO writes entries as a "newc" cpio archive, the format the Linux kernel
// unpacks as an initramfs. Entries are written sorted by name so that parents
// come before children and the output is reproducible.
func writeCPIO(w io.Writer, entries []cpioEntry) error {
	sorted := append([]cpioEntry(nil), entries...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	bw := bufio.NewWriter(w)
	var offset int64
	write := func(b []byte) {
		n, _ := bw.Write(b)
		offset += int64(n)
	}
	pad := func() {
		if r := offset % 4; r != 0 {
			write(make([]byte, 4-r))
		}
	}
	entry := func(ino int, e cpioEntry) {
		nlink := 1
		if e.Mode&0o170000 == modeDir {
			nlink = 2
		}
		hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			ino, e.Mode, 0, 0, nlink, 0, len(e.Data), 0, 0, e.Major, e.Minor, len(e.Name)+1, 0)
		write([]byte(hdr))
		write(append([]byte(e.Name), 0))
		pad()
		write(e.Data)
		pad()
	}
	for i, e := range sorted {
		entry(i+1, e)
	}
	entry(0, cpioEntry{Name: "TRAILER!!!"})
	return bw.Flush()
}
