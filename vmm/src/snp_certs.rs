//! `KVM_EXIT_SNP_REQ_CERTS`: an SEV-SNP guest's extended guest request asks for the host's
//! certificate chain (VCEK, ASK, ARK) next to its attestation report. KVM, once the VMM enabled
//! the exit, stops the vCPU with the guest's buffer (`gpa`, `npages`); the VMM writes the
//! configured certificate table there and answers with `ret` (0, or ENOSPC with the page count
//! needed, or EIO), after which KVM asks the firmware for the report.
//!
//! The answer itself is `snp::exits::answer_cert_request` (pure); here it meets guest memory
//! through [`GuestWriter`], so the logic is tested without a guest. The buffer must be shared
//! guest RAM inside the VM's layout: the table is written through the host's mapping, which
//! is the shared view of the guest's memory.

use devices::dma::DmaGuard;
use snp::exits::{answer_cert_request, certs_ret, CertAnswer};
use snp::plan::RamLayout;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// `KVM_EXIT_SNP_REQ_CERTS` (not in kvm-bindings yet).
pub const KVM_EXIT_SNP_REQ_CERTS: u32 = 42;

/// Where the table goes.
pub trait GuestWriter: Send + Sync {
    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), String>;
}

impl GuestWriter for GuestMemoryMmap {
    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), String> {
        self.write_slice(data, GuestAddress(gpa))
            .map_err(|e| e.to_string())
    }
}

/// What goes back into `kvm_run.snp_req_certs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertReply {
    pub ret: u64,
    pub npages: u64,
}

/// Answers a confidential VM's certificate requests from one configured blob.
pub struct CertRequests {
    blob: Vec<u8>,
    ram: RamLayout,
    memory: Box<dyn GuestWriter>,
    /// The guest's shared pages: a buffer it made private is refused like one outside RAM.
    shared: DmaGuard,
}

impl CertRequests {
    pub fn new(blob: Vec<u8>, ram: RamLayout, memory: Box<dyn GuestWriter>) -> Self {
        Self {
            blob,
            ram,
            memory,
            shared: DmaGuard::unrestricted(),
        }
    }

    /// Only write into pages `shared` allows.
    pub fn with_guard(self, shared: DmaGuard) -> Self {
        Self { shared, ..self }
    }

    /// The guest's request for a buffer of `npages` pages at `gpa`.
    pub fn on_request(&self, gpa: u64, npages: u64) -> CertReply {
        let eio = CertReply {
            ret: certs_ret::EIO,
            npages,
        };
        match answer_cert_request(gpa, npages, &self.blob) {
            Ok(CertAnswer::TooSmall { needed }) => CertReply {
                ret: certs_ret::ENOSPC,
                npages: needed,
            },
            Ok(CertAnswer::Write { gpa, table }) => {
                if !self.ram.contains(gpa, table.len() as u64) {
                    log::warn!("certificate request buffer {gpa:#x} is outside guest RAM");
                    return eio;
                }
                if !self.shared.allows(gpa, table.len() as u64) {
                    log::warn!("certificate request buffer {gpa:#x} is in private memory");
                    return eio;
                }
                match self.memory.write(gpa, &table) {
                    Ok(()) => CertReply {
                        ret: certs_ret::OK,
                        npages,
                    },
                    Err(e) => {
                        log::warn!("cannot write the certificate table at {gpa:#x}: {e}");
                        eio
                    }
                }
            }
            Err(e) => {
                log::warn!("refused certificate request: {e}");
                eio
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devices::dma::SharedPages;
    use std::sync::{Arc, Mutex};

    /// Writes seen: (gpa, bytes).
    type Writes = Vec<(u64, Vec<u8>)>;

    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Writes>>);

    impl GuestWriter for Recorder {
        fn write(&self, gpa: u64, data: &[u8]) -> Result<(), String> {
            self.0.lock().unwrap().push((gpa, data.to_vec()));
            Ok(())
        }
    }

    fn requests(blob: Vec<u8>) -> (CertRequests, Recorder) {
        let rec = Recorder::default();
        let ram = RamLayout::pc(64 << 20).unwrap();
        (CertRequests::new(blob, ram, Box::new(rec.clone())), rec)
    }

    #[test]
    fn the_table_is_written_when_it_fits() {
        let blob = vec![0xabu8; 5000];
        let (certs, rec) = requests(blob.clone());
        let reply = certs.on_request(0x10_000, 2);
        assert_eq!(reply, CertReply { ret: 0, npages: 2 });
        assert_eq!(*rec.0.lock().unwrap(), vec![(0x10_000, blob)]);
    }

    #[test]
    fn a_small_buffer_gets_enospc_with_the_pages_needed() {
        let (certs, rec) = requests(vec![1u8; 5000]);
        assert_eq!(
            certs.on_request(0x10_000, 1),
            CertReply {
                ret: certs_ret::ENOSPC,
                npages: 2
            }
        );
        assert!(rec.0.lock().unwrap().is_empty());
    }

    #[test]
    fn hostile_buffers_get_eio_and_nothing_is_written() {
        let (certs, rec) = requests(Vec::new());
        for (gpa, npages) in [
            (0x10_001, 1), // unaligned
            (!0xfff, 2),   // wraps
            (1 << 40, 1),  // outside RAM
        ] {
            assert_eq!(
                certs.on_request(gpa, npages).ret,
                certs_ret::EIO,
                "{gpa:#x}"
            );
        }
        assert!(rec.0.lock().unwrap().is_empty());
        // An empty blob answers with the terminator only.
        assert_eq!(certs.on_request(0x20_000, 1).ret, 0);
        assert_eq!(rec.0.lock().unwrap()[0].1, vec![0u8; 24]);
    }

    #[test]
    fn guest_memory_takes_the_table() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let ram = RamLayout::pc(1 << 20).unwrap();
        let certs = CertRequests::new(vec![7u8; 100], ram, Box::new(mem.clone()));
        assert_eq!(certs.on_request(0x3000, 1).ret, 0);
        let mut back = [0u8; 100];
        mem.read_slice(&mut back, GuestAddress(0x3000)).unwrap();
        assert_eq!(back, [7u8; 100]);
    }

    #[test]
    fn a_buffer_the_guest_made_private_gets_eio() {
        let pages = Arc::new(SharedPages::new(&[(0, 64 << 20)], true));
        pages.set(0x10_000, 0x1000, false).unwrap();
        let rec = Recorder::default();
        let ram = RamLayout::pc(64 << 20).unwrap();
        let certs = CertRequests::new(vec![1u8; 5000], ram, Box::new(rec.clone()))
            .with_guard(DmaGuard::shared_only(pages));
        assert_eq!(
            certs.on_request(0xf_000, 2).ret,
            certs_ret::EIO,
            "runs into it"
        );
        assert!(rec.0.lock().unwrap().is_empty());
        assert_eq!(certs.on_request(0x11_000, 2).ret, certs_ret::OK);
    }
}
