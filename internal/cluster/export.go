package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/drover/terraform-provider-drover/internal/storage"
	"github.com/drover/terraform-provider-drover/target/api/wire"
)

// Manifest is manifest.json of an exported backup.
type Manifest struct {
	Backup      string         `json:"backup"` // the snapshot set's id
	VMID        string         `json:"vm_id"`
	VMName      string         `json:"vm_name"`
	CreatedAt   time.Time      `json:"created_at"`
	Consistency string         `json:"consistency"`
	Files       []ManifestFile `json:"files"`
}

type ManifestFile struct {
	Name       string `json:"name"`
	SHA256     string `json:"sha256"`
	SizeBytes  int64  `json:"size_bytes"`
	Volume     string `json:"volume,omitempty"`
	SnapshotID string `json:"snapshot_id,omitempty"`
}

// Export writes the backup b into dir (which CheckExportPath accepted). On
// failure nothing is left half-done: the backup goes with its failed export.
func (c *Cluster) Export(ctx context.Context, b Backup, dir string) error {
	if !c.HasStorage() {
		return ErrNoStorage
	}
	err := c.export(ctx, b.Set, b.DomainXML, dir)
	if err == nil {
		return nil
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	if derr := c.storage.Sets.DeleteSnapshotSet(dctx, b.Set.ID); derr != nil && !errors.Is(derr, storage.ErrNotFound) {
		err = fmt.Errorf("%w; deleting the backup's snapshot set %s failed too: %v", err, b.Set.ID, derr)
	}
	return err
}

// export writes the backup set into dir: domain.xml, each disk as a sparse
// raw image <volume>.raw, and manifest.json, written last, with the SHA-256
// of every file. Files are written under temporary names and renamed when
// complete; on failure everything written is removed again, and dir too
// when this made it.
func (c *Cluster) export(ctx context.Context, set wire.SnapshotSet, domainXML, dir string) (err error) {
	_, statErr := os.Stat(dir)
	made := errors.Is(statErr, os.ErrNotExist)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("make export folder: %w", err)
	}
	var written []string
	defer func() {
		if err == nil {
			return
		}
		for _, f := range written {
			_ = os.Remove(f)
		}
		if made {
			_ = os.Remove(dir)
		}
	}()
	manifest := Manifest{Backup: set.ID, VMID: set.Labels[LabelVMID], VMName: set.Labels[LabelVMName],
		CreatedAt: set.CreatedAt, Consistency: set.Labels[LabelConsistency]}

	// writeFile writes name atomically with fill and records its hash.
	writeFile := func(name string, fill func(*os.File) (string, error)) (ManifestFile, error) {
		final := filepath.Join(dir, name)
		tmp := final + ".part"
		written = append(written, tmp)
		f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil {
			return ManifestFile{}, err
		}
		sum, err := fill(f)
		if err == nil {
			err = f.Sync()
		}
		var size int64
		if fi, serr := f.Stat(); serr == nil {
			size = fi.Size()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return ManifestFile{}, fmt.Errorf("write %s: %w", final, err)
		}
		if err := os.Rename(tmp, final); err != nil {
			return ManifestFile{}, err
		}
		written = append(written, final)
		return ManifestFile{Name: name, SHA256: sum, SizeBytes: size}, nil
	}
	hashBytes := func(b []byte) func(*os.File) (string, error) {
		return func(f *os.File) (string, error) {
			sum := sha256.Sum256(b)
			_, err := f.Write(b)
			return hex.EncodeToString(sum[:]), err
		}
	}

	mf, err := writeFile(DomainAttachment, hashBytes([]byte(domainXML)))
	if err != nil {
		return err
	}
	manifest.Files = append(manifest.Files, mf)
	for _, s := range set.Snapshots {
		start := time.Now()
		mf, err := writeFile(s.Volume+".raw", func(f *os.File) (string, error) {
			return c.storage.Sets.DownloadSnapshotSparse(ctx, s.ID, f)
		})
		if err != nil {
			return fmt.Errorf("export disk %s (snapshot %s): %w", s.Volume, s.ID, err)
		}
		mf.Volume, mf.SnapshotID = s.Volume, s.ID
		manifest.Files = append(manifest.Files, mf)
		c.log.Info(ctx, "exported disk", map[string]any{"volume": s.Volume, "file": filepath.Join(dir, mf.Name),
			"size_mib": mf.SizeBytes / storage.MiB, "duration": time.Since(start).Round(time.Millisecond).String()})
	}
	b, err := json.MarshalIndent(manifest, "", "  ")
	if err != nil {
		return err
	}
	_, err = writeFile("manifest.json", func(f *os.File) (string, error) {
		_, err := f.Write(append(b, '\n'))
		return "", err
	})
	return err
}
