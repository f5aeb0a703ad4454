//! `memfd_create` segments, sealed against shrinking and passed over Unix sockets with
//! `SCM_RIGHTS`.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use super::{c_string, check_len, fd_size, owned, set_len, Backing, Segment};
use crate::error::{Error, Result};

/// Longest memfd name (`NAME_MAX` minus the `memfd:` prefix the kernel adds).
const MAX_MEMFD_NAME: usize = 249;

/// Control-message space for exactly one descriptor.
// SAFETY: CMSG_SPACE is pure arithmetic on its argument.
const FD_SPACE: usize =
    unsafe { libc::CMSG_SPACE(core::mem::size_of::<libc::c_int>() as u32) } as usize;

/// A control-message buffer aligned for `cmsghdr`.
#[repr(C, align(8))]
struct CmsgBuf([u8; 64]);

static_assertions::const_assert!(FD_SPACE <= 64);
static_assertions::const_assert!(
    core::mem::align_of::<CmsgBuf>() >= core::mem::align_of::<libc::cmsghdr>()
);

fn socket_error(op: &'static str, kind: io::ErrorKind, what: &'static str) -> Error {
    Error::Os {
        op,
        target: String::new(),
        source: io::Error::new(kind, what),
    }
}

impl Segment {
    /// Creates an anonymous memory file (`memfd_create` with `MFD_CLOEXEC |
    /// MFD_ALLOW_SEALING`) of `len` bytes, zero-filled, seals it with `F_SEAL_SHRINK`
    /// and maps it. `name` is only a label (it shows in `/proc/<pid>/fd`); it need not be
    /// unique.
    ///
    /// The seal is what makes handing the descriptor to another process safe: without
    /// it the peer could `ftruncate` the file and every access past the new end would
    /// kill this process with `SIGBUS`. Growing is allowed (it cannot hurt a mapping).
    /// Pass the segment on with [`send_fd`](Self::send_fd) /
    /// [`recv_memfd`](Self::recv_memfd); it has no name to remove, and the memory is
    /// freed when the last descriptor and mapping are gone.
    ///
    /// ```
    /// use std::os::unix::net::UnixStream;
    /// use shmsync::Segment;
    /// let (here, there) = UnixStream::pair().unwrap();
    /// let a = Segment::memfd_create("doc", 4096)?;
    /// a.send_fd(&here)?;
    /// // Usually in another process, at the other end of the socket:
    /// let b = Segment::recv_memfd(&there)?;
    /// assert_eq!(b.len(), 4096);
    /// // SAFETY: both mappings are 4096 bytes long and nothing else uses them.
    /// unsafe {
    ///     a.as_ptr().write(9);
    ///     assert_eq!(b.as_ptr().read(), 9);
    /// }
    /// # Ok::<(), shmsync::Error>(())
    /// ```
    pub fn memfd_create(name: &str, len: usize) -> Result<Segment> {
        if name.len() > MAX_MEMFD_NAME {
            return Err(Error::InvalidName {
                name: name.to_owned(),
                reason: "a memfd name is at most 249 bytes",
            });
        }
        let cname = c_string(name)?;
        check_len(len)?;
        // SAFETY: `cname` is a valid NUL-terminated string.
        let fd = unsafe {
            libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        };
        if fd < 0 {
            return Err(Error::last_os("memfd_create", name));
        }
        let fd = owned(fd);
        set_len(&fd, len, name)?;
        // SAFETY: F_ADD_SEALS takes an int of seal bits; `fd` is an open memfd we own.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_SHRINK) } != 0 {
            return Err(Error::last_os("fcntl(F_ADD_SEALS)", name));
        }
        let raw = fd.as_raw_fd();
        Segment::map_fd(raw, len, Backing::Memfd { fd }, name)
    }

    /// Maps a memfd received some other way than [`recv_memfd`](Self::recv_memfd),
    /// whole.
    ///
    /// Refuses a descriptor that is not sealed with `F_SEAL_SHRINK` (a peer could
    /// truncate it under us: `SIGBUS`), anything that is not a sealable memory file, and
    /// a file of size 0.
    pub fn from_memfd(fd: OwnedFd) -> Result<Segment> {
        const TARGET: &str = "received memfd";
        // SAFETY: F_GET_SEALS takes no argument; `fd` is open (we own it).
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0 {
            return Err(Error::last_os("fcntl(F_GET_SEALS)", TARGET));
        }
        if seals & libc::F_SEAL_SHRINK == 0 {
            return Err(Error::InvalidArgument(
                "the memfd is not sealed with F_SEAL_SHRINK: its sender could truncate it \
                 and make this process's accesses SIGBUS",
            ));
        }
        let size = fd_size(fd.as_raw_fd(), TARGET)?;
        if size == 0 {
            return Err(Error::InvalidArgument("the memfd has size 0"));
        }
        let len = usize::try_from(size)
            .map_err(|_| Error::InvalidArgument("segment larger than the address space"))?;
        let raw = fd.as_raw_fd();
        Segment::map_fd(raw, len, Backing::Memfd { fd }, TARGET)
    }

    /// Sends this segment's memfd over the Unix socket `sock` (one byte of data carrying
    /// an `SCM_RIGHTS` message); the peer maps it with [`recv_memfd`](Self::recv_memfd).
    ///
    /// Only a [`Backing::Memfd`] segment has a descriptor to send; any other backing is
    /// [`Error::InvalidArgument`]. On a stream socket, do not interleave other writes
    /// with a send the peer has not received yet.
    pub fn send_fd(&self, sock: &impl AsFd) -> Result<()> {
        let Some(fd) = self.fd() else {
            return Err(Error::InvalidArgument(
                "only a memfd segment has a descriptor to send",
            ));
        };
        let mut byte = [b'M'];
        let mut iov = libc::iovec {
            iov_base: byte.as_mut_ptr().cast(),
            iov_len: 1,
        };
        let mut buf = CmsgBuf([0; 64]);
        let msg = one_fd_msghdr(&mut iov, &mut buf);
        // SAFETY: `msg` points to a control buffer of FD_SPACE (>= CMSG_SPACE(4)) bytes
        // aligned for cmsghdr, so the first header and its 4 data bytes are in bounds.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(core::mem::size_of::<libc::c_int>() as u32) as _;
            libc::CMSG_DATA(cmsg)
                .cast::<libc::c_int>()
                .write_unaligned(fd.as_raw_fd());
        }
        loop {
            // SAFETY: `msg` and everything it points to (iov, byte, control buffer) live
            // until the call returns; MSG_NOSIGNAL turns a closed peer into EPIPE
            // instead of SIGPIPE.
            let n = unsafe { libc::sendmsg(sock.as_fd().as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
            if n >= 0 {
                return Ok(());
            }
            if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return Err(Error::last_os("sendmsg(SCM_RIGHTS)", ""));
            }
        }
    }

    /// Receives a memfd sent with [`send_fd`](Self::send_fd) over the Unix socket `sock`
    /// and maps it (see [`from_memfd`](Self::from_memfd) for what is refused). Blocks
    /// until the message arrives, as the socket's reads do.
    ///
    /// The descriptor arrives close-on-exec (`MSG_CMSG_CLOEXEC`). A message carrying
    /// more than one descriptor is refused (`MSG_CTRUNC`) and every descriptor it
    /// carried is closed; a message with none, or a closed connection, is an error.
    pub fn recv_memfd(sock: &impl AsFd) -> Result<Segment> {
        let mut byte = [0u8];
        let mut iov = libc::iovec {
            iov_base: byte.as_mut_ptr().cast(),
            iov_len: 1,
        };
        let mut buf = CmsgBuf([0; 64]);
        let mut msg = one_fd_msghdr(&mut iov, &mut buf);
        let n = loop {
            // SAFETY: `msg` and everything it points to live until the call returns;
            // the kernel writes at most `msg_controllen` control bytes and 1 data byte.
            let n = unsafe {
                libc::recvmsg(sock.as_fd().as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC)
            };
            if n >= 0 {
                break n;
            }
            if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return Err(Error::last_os("recvmsg(SCM_RIGHTS)", ""));
            }
        };
        // Take ownership of every descriptor that arrived first, so that each is closed
        // on every error path below.
        let mut fds = Vec::new();
        // SAFETY: after a successful recvmsg, `msg.msg_control`/`msg_controllen` describe
        // the control bytes the kernel wrote into `buf`; CMSG_FIRSTHDR/CMSG_NXTHDR stay
        // within them, and each SCM_RIGHTS payload holds `(cmsg_len - CMSG_LEN(0)) / 4`
        // descriptors newly installed in this process, which nothing else owns.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let bytes =
                        ((*cmsg).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
                    let data = libc::CMSG_DATA(cmsg).cast::<libc::c_int>();
                    for i in 0..bytes / core::mem::size_of::<libc::c_int>() {
                        fds.push(owned(data.add(i).read_unaligned()));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(socket_error(
                "recvmsg(SCM_RIGHTS)",
                io::ErrorKind::InvalidData,
                "control message truncated (MSG_CTRUNC): the peer sent more than one descriptor",
            ));
        }
        if n == 0 && fds.is_empty() {
            return Err(socket_error(
                "recvmsg(SCM_RIGHTS)",
                io::ErrorKind::UnexpectedEof,
                "the peer closed the socket before sending a descriptor",
            ));
        }
        let mut fds = fds.into_iter();
        match (fds.next(), fds.next()) {
            (Some(fd), None) => Segment::from_memfd(fd),
            (None, _) => Err(socket_error(
                "recvmsg(SCM_RIGHTS)",
                io::ErrorKind::InvalidData,
                "the message carried no descriptor",
            )),
            (Some(_), Some(_)) => Err(socket_error(
                "recvmsg(SCM_RIGHTS)",
                io::ErrorKind::InvalidData,
                "the message carried more than one descriptor",
            )),
        }
    }
}

/// A message header over the one data byte in `iov` and the control buffer `buf`, sized
/// for one descriptor (used by both `send_fd` and `recv_memfd`).
fn one_fd_msghdr(iov: &mut libc::iovec, buf: &mut CmsgBuf) -> libc::msghdr {
    // SAFETY: an all-zero msghdr is a valid empty header (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { core::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = buf.0.as_mut_ptr().cast();
    msg.msg_controllen = FD_SPACE as _;
    msg
}
