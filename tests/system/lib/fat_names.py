# Lists the files and directories of the FAT12/16 file system at OFFSET of
# IMAGE by the names Linux's vfat shows with shortname=mixed (its default):
# the long name when there is one, else the 8.3 name with the NT lowercase
# bits applied. mtools stores an all-lowercase 8.3 name (client.crt) without
# a long name, only with those bits, so this is the guest's view of p2.
#   python3 fat_names.py IMAGE OFFSET
import sys, struct
img, off = sys.argv[1], int(sys.argv[2])
f = open(img, 'rb')
def rd(o, n):
    f.seek(off + o); return f.read(n)
bs = rd(0, 512)
bps, spc, rsv, nfats, nroot, tot16, media, fatsz16 = struct.unpack_from('<HBHBHHBH', bs, 11)
fatsz = fatsz16 or struct.unpack_from('<I', bs, 36)[0]
root_cluster = struct.unpack_from('<I', bs, 44)[0] if fatsz16 == 0 else None
root_off = (rsv + nfats * fatsz) * bps
data_off = root_off + ((nroot * 32 + bps - 1) // bps) * bps
def fat_next(c):
    # FAT12/16 only for root dir walking of subdirs; enough for small partitions
    fat = rd(rsv * bps, fatsz * bps)
    if (tot16 or struct.unpack_from('<I', bs, 32)[0]) // spc < 4085:
        v = struct.unpack_from('<H', fat, c * 3 // 2)[0]
        v = v >> 4 if c & 1 else v & 0xfff
        return None if v >= 0xff8 else v
    v = struct.unpack_from('<H', fat, c * 2)[0]
    return None if v >= 0xfff8 else v
def entries(data):
    lfn = []
    for i in range(0, len(data), 32):
        e = data[i:i+32]
        if e[0] == 0: break
        if e[0] == 0xe5: lfn = []; continue
        if e[11] == 0x0f:
            lfn.insert(0, (e[1:11] + e[14:26] + e[28:32]).decode('utf-16le')); continue
        if e[11] & 0x08: lfn = []; continue
        base, ext = e[0:8].decode().rstrip(), e[8:11].decode().rstrip()
        if lfn:
            name = ''.join(lfn).split('\x00')[0]
        else:
            # Linux shortname=mixed honours the NT case bits
            if e[12] & 0x08: base = base.lower()
            if e[12] & 0x10: ext = ext.lower()
            name = base + ('.' + ext if ext else '')
        lfn = []
        if name in ('.', '..'): continue
        yield name, bool(e[11] & 0x10), struct.unpack_from('<H', e, 26)[0]
def walk(data, prefix):
    for name, isdir, clus in entries(data):
        if isdir:
            print(prefix + name + '/')
            buf = b''
            while clus:
                buf += rd(data_off + (clus - 2) * spc * bps, spc * bps); clus = fat_next(clus)
            walk(buf, prefix + name + '/')
        else:
            print(prefix + name)
walk(rd(root_off, nroot * 32), '')
