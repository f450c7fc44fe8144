import ctypes, os
def apply():
    spec = os.environ.get("TV_MALLOC")
    if not spec: return
    mmap_t, trim_t = (int(x) for x in spec.split(","))
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, mmap_t); libc.mallopt(-1, trim_t)
