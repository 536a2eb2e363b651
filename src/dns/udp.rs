//! The UDP listener: one thread per socket, reading and answering datagrams
//! in batches (`recvmmsg`/`sendmmsg`), so a cache hit costs two system calls
//! per batch rather than two per query, and no async machinery sits on the
//! hot path. Queries that must wait for upstream are handed to the tokio
//! runtime and answered from there.

use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use tokio::sync::Semaphore;

use super::pipeline::{Arrival, Pipeline};
use super::respond::{Step, finish_answer, step, write_answer, write_error_answer};

/// Datagrams read (and answers sent) per system call.
const BATCH: usize = 32;
/// Largest query read; DNS queries are far smaller, and a longer datagram is
/// dropped (it cannot be a sensible query).
const MAX_QUERY: usize = 4096;
/// How often a blocked read wakes to see whether the server is stopping.
const STOP_POLL: Duration = Duration::from_millis(50);

/// Runs until `stop` is set. `socket` must be bound.
pub fn serve(
    socket: Arc<UdpSocket>,
    pipeline: Arc<Pipeline>,
    runtime: tokio::runtime::Handle,
    in_flight: Arc<Semaphore>,
    stop: Arc<AtomicBool>,
) {
    enlarge_receive_buffer(&socket);
    if let Err(error) = socket.set_read_timeout(Some(STOP_POLL)) {
        tracing::error!(%error, "cannot set the UDP read timeout; UDP listener not started");
        return;
    }
    let mut batch = Batch::new();
    let mut replies: Vec<(Vec<u8>, SocketAddr)> =
        (0..BATCH).map(|_| (Vec::with_capacity(1_232), unspecified())).collect();
    while !stop.load(Ordering::Relaxed) {
        let received = match batch.receive(&socket) {
            Ok(count) => count,
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(error) => {
                // ICMP errors from earlier sends surface here; they are not fatal.
                tracing::debug!(%error, "UDP receive error");
                continue;
            }
        };
        let mut ready = 0;
        let arrival = Arrival::now();
        for index in 0..received {
            let Some((packet, source)) = batch.datagram(index) else { continue };
            let (out, to) = &mut replies[ready];
            match step(&pipeline, arrival, packet, source, None, out) {
                Step::Silent => {}
                Step::Reply => {
                    *to = source;
                    ready += 1;
                }
                Step::Resolve(query, question, pending) => {
                    let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                        write_error_answer(
                            &pipeline,
                            arrival,
                            source,
                            &query,
                            ResponseCode::ServFail,
                            "too many queries in progress",
                            query.udp_limit(),
                            out,
                        );
                        *to = source;
                        ready += 1;
                        continue;
                    };
                    let (socket, pipeline) = (socket.clone(), pipeline.clone());
                    runtime.spawn(async move {
                        let answer = pipeline.resolve(&pending, &question).await;
                        let mut out = Vec::with_capacity(512);
                        write_answer(&query, &answer, query.udp_limit(), &mut out);
                        if let Err(error) = socket.send_to(&out, source) {
                            tracing::debug!(%error, %source, "UDP send failed");
                        }
                        finish_answer(&pipeline, arrival, source, &query, &answer);
                        drop(permit);
                    });
                }
            }
        }
        send_all(&socket, &replies[..ready]);
    }
}

/// Receive buffer asked of the kernel: room for a burst of a few thousand
/// queries while the thread is busy, so bursts are not dropped.
const RECEIVE_BUFFER: libc::c_int = 4 * 1024 * 1024;

/// Best effort: the kernel caps it at net.core.rmem_max.
pub fn enlarge_receive_buffer(socket: &impl AsRawFd) {
    // SAFETY: setsockopt with a c_int option value of the right size.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&RECEIVE_BUFFER as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cannot enlarge the UDP receive buffer");
    }
}

fn unspecified() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

/// Buffers and headers for one `recvmmsg` call. Boxed: the headers point
/// into the buffers, so they must not move.
struct Batch {
    buffers: Box<[[u8; MAX_QUERY]; BATCH]>,
    addresses: Box<[MaybeUninit<libc::sockaddr_storage>; BATCH]>,
    iovecs: Box<[libc::iovec; BATCH]>,
    headers: Box<[libc::mmsghdr; BATCH]>,
}

// The raw pointers inside point only into the Batch's own boxes.
unsafe impl Send for Batch {}

impl Batch {
    fn new() -> Batch {
        // SAFETY: all-zero bytes are valid for these plain C structs.
        let zeroed_iovec: libc::iovec = unsafe { std::mem::zeroed() };
        let zeroed_header: libc::mmsghdr = unsafe { std::mem::zeroed() };
        Batch {
            buffers: Box::new([[0; MAX_QUERY]; BATCH]),
            addresses: Box::new([MaybeUninit::zeroed(); BATCH]),
            iovecs: Box::new([zeroed_iovec; BATCH]),
            headers: Box::new([zeroed_header; BATCH]),
        }
    }

    /// Blocks until at least one datagram arrives (or the read timeout),
    /// then takes as many as are waiting, up to `BATCH`.
    fn receive(&mut self, socket: &UdpSocket) -> std::io::Result<usize> {
        for index in 0..BATCH {
            self.iovecs[index] = libc::iovec { iov_base: self.buffers[index].as_mut_ptr().cast(), iov_len: MAX_QUERY };
            let header = &mut self.headers[index];
            header.msg_hdr.msg_name = self.addresses[index].as_mut_ptr().cast();
            header.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_hdr.msg_iov = &mut self.iovecs[index];
            header.msg_hdr.msg_iovlen = 1;
            header.msg_hdr.msg_control = std::ptr::null_mut();
            header.msg_hdr.msg_controllen = 0;
            header.msg_hdr.msg_flags = 0;
            header.msg_len = 0;
        }
        // SAFETY: every header points at live buffers owned by `self`, sized as declared.
        let count = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if count < 0 { Err(std::io::Error::last_os_error()) } else { Ok(count as usize) }
    }

    /// The datagram at `index` and its sender; None for one that was cut
    /// short (longer than any real query) or has no usable address.
    fn datagram(&self, index: usize) -> Option<(&[u8], SocketAddr)> {
        let header = &self.headers[index];
        if header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            return None;
        }
        let len = (header.msg_len as usize).min(MAX_QUERY);
        // SAFETY: the kernel filled msg_namelen bytes of the storage.
        let address = unsafe { socket_address(self.addresses[index].as_ptr(), header.msg_hdr.msg_namelen) }?;
        Some((&self.buffers[index][..len], address))
    }
}

/// Converts a kernel socket address to std's.
///
/// # Safety
/// `storage` must point at `len` initialised bytes of a socket address.
unsafe fn socket_address(storage: *const libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let family = unsafe { (*storage).ss_family } as libc::c_int;
    match family {
        libc::AF_INET if len as usize >= std::mem::size_of::<libc::sockaddr_in>() => {
            let v4 = unsafe { &*(storage as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(v4.sin_port))))
        }
        libc::AF_INET6 if len as usize >= std::mem::size_of::<libc::sockaddr_in6>() => {
            let v6 = unsafe { &*(storage as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(v6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(ip, u16::from_be(v6.sin6_port), v6.sin6_flowinfo, v6.sin6_scope_id)))
        }
        _ => None,
    }
}

/// Sends every reply, batched with `sendmmsg`; falls back to one `send_to`
/// per reply for any the batch call did not take.
fn send_all(socket: &UdpSocket, replies: &[(Vec<u8>, SocketAddr)]) {
    if replies.is_empty() {
        return;
    }
    let mut addresses: Vec<(libc::sockaddr_storage, libc::socklen_t)> =
        replies.iter().map(|(_, to)| to_storage(*to)).collect();
    let mut iovecs: Vec<libc::iovec> = replies
        .iter()
        .map(|(bytes, _)| libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() })
        .collect();
    let mut headers: Vec<libc::mmsghdr> = (0..replies.len())
        .map(|index| {
            // SAFETY: all-zero bytes are a valid mmsghdr.
            let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
            header.msg_hdr.msg_name = (&mut addresses[index].0 as *mut libc::sockaddr_storage).cast();
            header.msg_hdr.msg_namelen = addresses[index].1;
            header.msg_hdr.msg_iov = &mut iovecs[index];
            header.msg_hdr.msg_iovlen = 1;
            header
        })
        .collect();
    // SAFETY: headers point at the addresses and replies above, alive for the call.
    let sent = unsafe { libc::sendmmsg(socket.as_raw_fd(), headers.as_mut_ptr(), headers.len() as libc::c_uint, 0) };
    let sent = if sent < 0 { 0 } else { sent as usize };
    for (bytes, to) in &replies[sent..] {
        if let Err(error) = socket.send_to(bytes, *to) {
            tracing::debug!(%error, %to, "UDP send failed");
        }
    }
}

fn to_storage(address: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero bytes are a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match address {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe { &mut *(&mut storage as *mut libc::sockaddr_storage as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = v4.port().to_be();
            sin.sin_addr = libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut storage as *mut libc::sockaddr_storage as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = v6.port().to_be();
            sin6.sin6_addr = libc::in6_addr { s6_addr: v6.ip().octets() };
            sin6.sin6_flowinfo = v6.flowinfo();
            sin6.sin6_scope_id = v6.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}
