//! Port forwards on the host's IPv6 loopback: the kernel never routes a packet from ::1 off the
//! loopback device, so destination NAT cannot forward `[::1]:PORT` to a guest (127.0.0.1 works
//! through nftables and `route_localnet`). A small relay process per guest listens on
//! `[::1]:HOST_PORT` and copies bytes (TCP) or datagrams (UDP) to and from the guest.
//!
//! The relay is forked by the guest's monitor, binds its sockets, then drops to `nobody` (no
//! capabilities left) and dies with the monitor (`PR_SET_PDEATHSIG`). Each forward serves at
//! most 256 clients at once; idle TCP connections close after 15 minutes, idle UDP clients are
//! forgotten after 2 minutes.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most TCP connections (or UDP clients) one forward serves at once; more are refused.
const MAX_CLIENTS: usize = 256;
/// A TCP connection with no data either way for this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(900);
/// A UDP client that got no reply for this long is forgotten.
const UDP_IDLE: Duration = Duration::from_secs(120);

/// One forward the relay serves: `[::1]:host_port` to `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayForward {
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Port on ::1.
    pub host_port: u16,
    /// The guest's addresses with the port, in the order tried: TCP connects to the first
    /// that answers (a service bound to 0.0.0.0 only is reached over IPv4, one bound to an
    /// IPv6-only socket over IPv6); UDP sends to the first.
    pub targets: Vec<SocketAddr>,
}

enum Bound {
    Tcp(TcpListener, Vec<SocketAddr>),
    Udp(UdpSocket, SocketAddr),
}

/// Bind every forward on ::1; those that cannot be bound (port in use, IPv6 off) are reported
/// on stderr (the monitor's log) and skipped.
fn bind_all(forwards: &[RelayForward]) -> Vec<Bound> {
    let mut out = Vec::new();
    for f in forwards {
        let at = SocketAddr::from((Ipv6Addr::LOCALHOST, f.host_port));
        let Some(first) = f.targets.first().copied() else {
            continue;
        };
        let res = if f.protocol == "udp" {
            UdpSocket::bind(at).map(|s| Bound::Udp(s, first))
        } else {
            TcpListener::bind(at).map(|s| Bound::Tcp(s, f.targets.clone()))
        };
        match res {
            Ok(b) => out.push(b),
            Err(e) => eprintln!("relay: {}/{at}: {e}", f.protocol),
        }
    }
    out
}

fn pipe_tcp(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

/// Decrements the live-client count when a client's work ends, however it ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn take_slot(live: &Arc<AtomicUsize>) -> Option<Slot> {
    if live.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
        live.fetch_sub(1, Ordering::SeqCst);
        return None;
    }
    Some(Slot(live.clone()))
}

fn serve_tcp(l: TcpListener, targets: Vec<SocketAddr>) {
    let live = Arc::new(AtomicUsize::new(0));
    loop {
        let client = match l.accept() {
            Ok((c, _)) => c,
            Err(_) => {
                // Out of fds or memory: wait instead of spinning.
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let Some(slot) = take_slot(&live) else {
            continue; // dropping the client closes it
        };
        let targets = targets.clone();
        let spawned = std::thread::Builder::new().spawn(move || {
            let _slot = slot;
            let Some(guest) = targets
                .iter()
                .find_map(|t| TcpStream::connect_timeout(t, Duration::from_secs(5)).ok())
            else {
                return;
            };
            for s in [&client, &guest] {
                let _ = s.set_read_timeout(Some(TCP_IDLE));
            }
            let (Ok(c2), Ok(g2)) = (client.try_clone(), guest.try_clone()) else {
                return;
            };
            match std::thread::Builder::new().spawn(move || pipe_tcp(client, guest)) {
                Ok(up) => {
                    pipe_tcp(g2, c2);
                    let _ = up.join();
                }
                Err(_) => {
                    let _ = c2.shutdown(Shutdown::Both);
                }
            }
        });
        // A failed spawn drops the closure, and with it the client and its slot.
        drop(spawned);
    }
}

/// Each client gets its own socket towards the guest, so replies find their way back.
fn serve_udp(s: UdpSocket, target: SocketAddr) {
    let s = Arc::new(s);
    let peers: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let live = Arc::new(AtomicUsize::new(0));
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, client)) = s.recv_from(&mut buf) else {
            continue;
        };
        let existing = peers.lock().ok().and_then(|m| m.get(&client).cloned());
        let up = match existing {
            Some(u) => u,
            None => {
                let Some(slot) = take_slot(&live) else {
                    continue;
                };
                let local: SocketAddr = if target.is_ipv4() {
                    "0.0.0.0:0".parse().expect("literal")
                } else {
                    "[::]:0".parse().expect("literal")
                };
                let Ok(u) = UdpSocket::bind(local) else {
                    continue;
                };
                if u.connect(target).is_err() {
                    continue;
                }
                let u = Arc::new(u);
                if let Ok(mut m) = peers.lock() {
                    m.insert(client, u.clone());
                }
                let (back, down, mine) = (s.clone(), u.clone(), peers.clone());
                let spawned = std::thread::Builder::new().spawn(move || {
                    let _slot = slot;
                    let _ = down.set_read_timeout(Some(UDP_IDLE));
                    let mut b = vec![0u8; 65536];
                    while let Ok(n) = down.recv(&mut b) {
                        let _ = back.send_to(&b[..n], client);
                    }
                    if let Ok(mut m) = mine.lock() {
                        m.remove(&client);
                    }
                });
                if spawned.is_err() {
                    if let Ok(mut m) = peers.lock() {
                        m.remove(&client);
                    }
                    continue;
                }
                u
            }
        };
        let _ = up.send(&buf[..n]);
    }
}

/// Run the relay for `forwards` in the calling (freshly forked) process: bind, drop privileges,
/// serve until the parent dies. Never returns.
pub fn run(forwards: &[RelayForward]) -> ! {
    let parent = nix::unistd::getppid();
    let _ = nix::sys::prctl::set_name(c"vs-relay");
    let bound = bind_all(forwards);
    // nobody: a relay needs no privilege once its sockets are bound.
    let nobody = nix::unistd::Uid::from_raw(65534);
    let nogroup = nix::unistd::Gid::from_raw(65534);
    if nix::unistd::setgroups(&[])
        .and_then(|()| nix::unistd::setresgid(nogroup, nogroup, nogroup))
        .and_then(|()| nix::unistd::setresuid(nobody, nobody, nobody))
        .is_err()
    {
        eprintln!("relay: cannot drop to nobody; not serving");
        std::process::exit(1);
    }
    // After the credential change, which clears it (prctl(2)): die with the monitor.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    if nix::unistd::getppid() != parent {
        std::process::exit(0);
    }
    let mut threads = Vec::new();
    for b in bound {
        match std::thread::Builder::new().spawn(move || match b {
            Bound::Tcp(l, t) => serve_tcp(l, t),
            Bound::Udp(s, t) => serve_udp(s, t),
        }) {
            Ok(t) => threads.push(t),
            Err(e) => eprintln!("relay: cannot start a forward: {e}"),
        }
    }
    for t in threads {
        let _ = t.join();
    }
    loop {
        nix::unistd::pause();
    }
}
