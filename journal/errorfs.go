package journal

// ErrorFS wraps an FS and lets tests fail chosen operations. Inject is
// called before every operation with its name and the file it concerns; a
// non-nil result is returned instead of performing the operation.
//
// Operation names: "create", "open", "remove", "rename", "list", "mkdir",
// "syncdir" (FS) and "write", "read", "sync", "truncate", "size", "map",
// "unmap", "close" (File). For "rename" the name is the old name.
type ErrorFS struct {
	FS     FS
	Inject func(op, name string) error
}

var _ FS = ErrorFS{}

func (e ErrorFS) inject(op, name string) error {
	if e.Inject == nil {
		return nil
	}
	return e.Inject(op, name)
}

// Create implements FS.
func (e ErrorFS) Create(name string) (File, error) {
	if err := e.inject("create", name); err != nil {
		return nil, err
	}
	f, err := e.FS.Create(name)
	if err != nil {
		return nil, err
	}
	return errorFile{f: f, name: name, fs: e}, nil
}

// Open implements FS.
func (e ErrorFS) Open(name string) (File, error) {
	if err := e.inject("open", name); err != nil {
		return nil, err
	}
	f, err := e.FS.Open(name)
	if err != nil {
		return nil, err
	}
	return errorFile{f: f, name: name, fs: e}, nil
}

// Remove implements FS.
func (e ErrorFS) Remove(name string) error {
	if err := e.inject("remove", name); err != nil {
		return err
	}
	return e.FS.Remove(name)
}

// Rename implements FS.
func (e ErrorFS) Rename(oldname, newname string) error {
	if err := e.inject("rename", oldname); err != nil {
		return err
	}
	return e.FS.Rename(oldname, newname)
}

// List implements FS.
func (e ErrorFS) List(dir string) ([]string, error) {
	if err := e.inject("list", dir); err != nil {
		return nil, err
	}
	return e.FS.List(dir)
}

// MkdirAll implements FS.
func (e ErrorFS) MkdirAll(dir string) error {
	if err := e.inject("mkdir", dir); err != nil {
		return err
	}
	return e.FS.MkdirAll(dir)
}

// SyncDir implements FS.
func (e ErrorFS) SyncDir(dir string) error {
	if err := e.inject("syncdir", dir); err != nil {
		return err
	}
	return e.FS.SyncDir(dir)
}

// Note: the name is a path (WriteAt's file), so errorFile is a value type
// holding it; the File methods do not allocate beyond the wrapped file's.
type errorFile struct {
	f    File
	name string
	fs   ErrorFS
}

func (f errorFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.fs.inject("write", f.name); err != nil {
		return 0, err
	}
	return f.f.WriteAt(p, off)
}

func (f errorFile) ReadAt(p []byte, off int64) (int, error) {
	if err := f.fs.inject("read", f.name); err != nil {
		return 0, err
	}
	return f.f.ReadAt(p, off)
}

func (f errorFile) SyncData() error {
	if err := f.fs.inject("sync", f.name); err != nil {
		return err
	}
	return f.f.SyncData()
}

func (f errorFile) Truncate(size int64) error {
	if err := f.fs.inject("truncate", f.name); err != nil {
		return err
	}
	return f.f.Truncate(size)
}

func (f errorFile) Size() (int64, error) {
	if err := f.fs.inject("size", f.name); err != nil {
		return 0, err
	}
	return f.f.Size()
}

func (f errorFile) Map() ([]byte, error) {
	if err := f.fs.inject("map", f.name); err != nil {
		return nil, err
	}
	return f.f.Map()
}

func (f errorFile) Unmap() error {
	if err := f.fs.inject("unmap", f.name); err != nil {
		return err
	}
	return f.f.Unmap()
}

func (f errorFile) Close() error {
	if err := f.fs.inject("close", f.name); err != nil {
		return err
	}
	return f.f.Close()
}
