"""A hand-written efps client for the hostile tests: speaks the tcp
transport's frames (transport/tcp/tcp_wire.h) and the parameter server's
control messages (lib/ps/ps_int.h) over raw sockets, so a test can send
exactly the bytes an attacker would."""
import hashlib
import hmac
import os
import socket
import struct

HDR = struct.Struct("<IBBHIIIIQQ")  # magic version type flags length imm region reserved secret offset
T_MAGIC, T_VERSION = 0x54504645, 1
F_CONNECT, F_ACCEPT, F_REJECT, F_WRITE, F_MSG, F_PING, F_BYE = range(1, 8)
PS_MAGIC, PS_VERSION = 0x53504645, 2
ROLE_WORKER = 1
MSG_AUTH, MSG_LAYOUT, MSG_KEYS, MSG_READY, MSG_REFUSE, MSG_BYE = range(1, 7)
COMP = {"none": 0, "sign": 1, "blocksign": 2}


class Refused(Exception):
    pass


def hello(rank, num_workers, role=ROLE_WORKER, nonce=None):
    return struct.pack("<IHHII", PS_MAGIC, PS_VERSION, role, rank, num_workers) + (
        nonce or os.urandom(16))


def mac(secret, label, first, second):
    msg = label.encode().ljust(32, b"\0")[:32] + first + second
    return hmac.new(secret.encode(), msg, hashlib.sha256).digest()


class Conn:
    def __init__(self, port, host="127.0.0.1", src=None, timeout=5.0):
        self.s = socket.socket()
        if src is not None:
            self.s.bind((src, 0))
        self.s.settimeout(timeout)
        self.s.connect((host, port))

    def close(self):
        self.s.close()

    def frame(self, ftype, payload=b"", imm=0, region=0, secret=0, offset=0):
        self.s.sendall(HDR.pack(T_MAGIC, T_VERSION, ftype, 0, len(payload), imm, region, 0,
                                secret, offset) + payload)

    def _exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.s.recv(n - len(buf))
            if not chunk:
                raise EOFError("closed by the server")
            buf += chunk
        return buf

    def read_frame(self):
        """The next frame that is not a PING: (type, payload)."""
        while True:
            h = HDR.unpack(self._exact(HDR.size))
            payload = self._exact(h[4]) if h[4] else b""
            if h[2] != F_PING:
                return h[2], payload

    def connect(self, hello_bytes, timeout_ms=0):
        """CONNECT with this hello; returns the server's hello (ACCEPT) or raises Refused."""
        self.frame(F_CONNECT, hello_bytes, imm=timeout_ms)
        t, p = self.read_frame()
        if t != F_ACCEPT:
            raise Refused("transport frame %d instead of ACCEPT" % t)
        return p

    def send_msg(self, m):
        self.frame(F_MSG, m)

    def recv_msg(self):
        """The next control message: (type, body); a REFUSE raises Refused(reason)."""
        while True:
            t, p = self.read_frame()
            if t == F_BYE:
                raise EOFError("BYE from the server")
            if t != F_MSG:
                continue
            mtype = struct.unpack_from("<I", p)[0]
            if mtype == MSG_REFUSE:
                raise Refused(p[4:].split(b"\0")[0].decode(errors="replace"))
            return mtype, p[4:]

    def wait_closed(self, seconds):
        """True when the server closes this connection within seconds (frames are skipped)."""
        self.s.settimeout(seconds)
        try:
            while self.s.recv(65536):
                pass
            return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False


def login(port, secret, rank, num_workers, src=None):
    """A connection authenticated as worker rank (with the right secret)."""
    c = Conn(port, src=src)
    mine = hello(rank, num_workers)
    theirs = c.connect(mine)
    c.send_msg(struct.pack("<I", MSG_AUTH) + mac(secret, "efps worker", mine, theirs))
    t, body = c.recv_msg()
    assert t == MSG_AUTH and hmac.compare_digest(body, mac(secret, "efps server", theirs, mine))
    return c


def layout_head(comp, block, partition_bytes, nkeys, rkey=None):
    if rkey is None:  # a valid-looking tcp key of 1 MB
        rkey = struct.pack("<QQIHH", 0x1234, 1 << 20, 1, 1, 1)
    return struct.pack("<IIQQQ", MSG_LAYOUT, comp, block, partition_bytes, nkeys) + rkey


def keys_msg(keys):
    """keys: (key, n, block) tuples, at most 128."""
    return struct.pack("<II", MSG_KEYS, len(keys)) + b"".join(
        struct.pack("<IQQ", k, n, b) for k, n, b in keys)


def unpack_rkey(b):
    base, length, key, transport, access = struct.unpack("<QQIHH", b[:24])
    return {"base": base, "length": length, "key": key}
