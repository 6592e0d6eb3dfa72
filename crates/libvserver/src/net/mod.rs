//! Networking of guests: netlink operations on links, addresses and routes, nftables tables of
//! our own (anti-spoofing, NAT, port forwards, accounting) and the eBPF socket hooks of classic
//! networking.
pub mod bpf;
pub mod netlink;
pub mod nft;
pub mod relay;
