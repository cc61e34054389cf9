//! Batched sends: the datagrams one flush of the shard produces leave in `sendmmsg` calls of up
//! to [`BATCH`], one system call for many peers instead of one each.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, sendmmsg};
use str0m::net::DatagramSend;
use tokio::net::UdpSocket;

/// Datagrams per `sendmmsg` call.
pub(super) const BATCH: usize = 64;

/// Datagrams waiting to be sent, in order.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    queue: Vec<(SocketAddr, DatagramSend)>,
}

impl Outbox {
    /// Queues one datagram.
    pub(super) fn push(&mut self, destination: SocketAddr, contents: DatagramSend) {
        self.queue.push((destination, contents));
    }

    /// Datagrams queued.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.queue.len()
    }

    /// Sends everything queued: in batches while the socket takes them, then one by one,
    /// waiting for the socket, if it is full. A datagram the kernel refuses (an unreachable
    /// destination) is dropped and logged; the rest still go.
    pub(super) async fn send(&mut self, socket: &UdpSocket) {
        let mut sent = 0;
        while sent < self.queue.len() {
            let end = (sent + BATCH).min(self.queue.len());
            match send_batch(socket, &self.queue[sent..end]) {
                Ok(n) => sent += n.max(1).min(end - sent),
                Err(Errno::EAGAIN) => {
                    let (destination, contents) = &self.queue[sent];
                    if let Err(err) = socket.send_to(contents, *destination).await {
                        tracing::debug!(%err, %destination, "UDP send failed");
                    }
                    sent += 1;
                }
                Err(err) => {
                    tracing::debug!(%err, destination = %self.queue[sent].0, "UDP send failed");
                    sent += 1;
                }
            }
        }
        self.queue.clear();
    }
}

/// One `sendmmsg`: how many of `batch` the kernel took (at least one, or an error about the
/// first).
fn send_batch(socket: &UdpSocket, batch: &[(SocketAddr, DatagramSend)]) -> nix::Result<usize> {
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(batch.len(), None);
    let slices: Vec<[IoSlice<'_>; 1]> = batch
        .iter()
        .map(|(_, contents)| [IoSlice::new(contents)])
        .collect();
    let addresses: Vec<Option<SockaddrStorage>> = batch
        .iter()
        .map(|(destination, _)| Some(SockaddrStorage::from(*destination)))
        .collect();
    let no_control: [ControlMessage<'_>; 0] = [];
    let sent = sendmmsg(
        socket.as_raw_fd(),
        &mut headers,
        &slices,
        &addresses,
        no_control,
        MsgFlags::MSG_DONTWAIT,
    )?;
    Ok(sent.count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_flush_of_datagrams_to_many_peers_arrives_whole_and_in_order() {
        let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let receivers = [
            UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        ];
        let mut outbox = Outbox::default();
        // More than one batch, alternating destinations.
        for i in 0..150u32 {
            let to = receivers[i as usize % 2].local_addr().unwrap();
            outbox.push(to, DatagramSend::from(i.to_be_bytes().to_vec()));
        }
        assert_eq!(outbox.len(), 150);
        outbox.send(&sender).await;
        assert_eq!(outbox.len(), 0);
        for (r, receiver) in receivers.iter().enumerate() {
            let mut buf = [0u8; 8];
            for i in (r as u32..150).step_by(2) {
                let (n, from) = receiver.recv_from(&mut buf).await.unwrap();
                assert_eq!(from, sender.local_addr().unwrap());
                assert_eq!(&buf[..n], &i.to_be_bytes());
            }
        }
    }
}
