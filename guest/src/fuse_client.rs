//! A FUSE session over one virtio-fs device: the requests the scenarios need, one at a time,
//! encoded and checked by `probe_parse::fuse`.

use crate::clock::Clock;
use crate::virtio_fs::{dma_buffer, release_dma_buffer, FsDevice, FsError};
use probe_parse::fuse::{self, EntryOut, FuseError, InitOut, Request, ROOT_ID};

/// Bytes of file data per READ or WRITE.
pub const CHUNK: usize = 32 * 1024;
/// DMA pages per buffer: a chunk plus headers.
const BUFFER_PAGES: usize = CHUNK / 4096 + 1;

#[derive(Debug, Clone, Copy)]
pub enum ClientError {
    Device(FsError),
    Fuse(FuseError),
}

impl From<FsError> for ClientError {
    fn from(e: FsError) -> Self {
        ClientError::Device(e)
    }
}

impl From<FuseError> for ClientError {
    fn from(e: FuseError) -> Self {
        ClientError::Fuse(e)
    }
}

impl ClientError {
    pub fn report(&self, out: crate::serial::Out) -> crate::serial::Out {
        match self {
            ClientError::Device(e) => e.report(out),
            ClientError::Fuse(e) => e.report(out),
        }
    }

    /// The server's errno if it answered with one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            ClientError::Fuse(FuseError::Errno(e)) => Some(-e),
            _ => None,
        }
    }
}

pub struct Session {
    pub dev: FsDevice,
    request: &'static mut [u8],
    reply: &'static mut [u8],
    unique: u64,
    pub init: Option<InitOut>,
}

impl Session {
    pub fn new(dev: FsDevice) -> Self {
        Self {
            dev,
            request: dma_buffer(BUFFER_PAGES),
            reply: dma_buffer(BUFFER_PAGES),
            unique: 0,
            init: None,
        }
    }

    /// Resets the device and gives its rings and this session's buffers back to the DMA pool
    /// (a hot-unplugged share). False if the device did not finish its reset; its memory then
    /// stays out of the pool.
    pub fn close(self, clock: &Clock) -> bool {
        if !self.dev.close(clock) {
            return false;
        }
        release_dma_buffer(self.request);
        release_dma_buffer(self.reply);
        true
    }

    /// Sends one request for `nodeid` and returns the reply payload.
    fn call(&mut self, req: Request, nodeid: u64, clock: &Clock) -> Result<&[u8], ClientError> {
        let capacity = self.reply.len();
        self.call_with_reply(req, nodeid, capacity, clock)
    }

    /// As [`Self::call`], offering the server exactly `capacity` bytes for its reply. READ
    /// needs this: as Linux's driver does, the reply buffer is the header plus the requested
    /// size, and servers may fill every byte they are offered.
    fn call_with_reply(
        &mut self,
        req: Request,
        nodeid: u64,
        capacity: usize,
        clock: &Clock,
    ) -> Result<&[u8], ClientError> {
        self.unique = self.unique.wrapping_add(1);
        let len = req.encode(self.request, self.unique, nodeid)?;
        let request = self.request.get(..len).unwrap_or(&[]);
        let end = capacity.min(self.reply.len());
        let reply = self.reply.get_mut(..end).unwrap_or(&mut []);
        let used = self.dev.transact(request, reply, clock)?;
        Ok(fuse::reply_payload(self.reply, used, self.unique)?)
    }

    pub fn init(&mut self, clock: &Clock) -> Result<InitOut, ClientError> {
        let p = self.call(
            Request::Init {
                max_readahead: CHUNK as u32,
                flags: 0,
            },
            0,
            clock,
        )?;
        let init = InitOut::parse(p)?;
        self.init = Some(init);
        Ok(init)
    }

    pub fn lookup(
        &mut self,
        parent: u64,
        name: &[u8],
        clock: &Clock,
    ) -> Result<EntryOut, ClientError> {
        let p = self.call(Request::Lookup { name }, parent, clock)?;
        Ok(EntryOut::parse(p)?)
    }

    pub fn getattr(&mut self, node: u64, clock: &Clock) -> Result<fuse::Attr, ClientError> {
        let p = self.call(Request::Getattr, node, clock)?;
        Ok(fuse::parse_attr_out(p)?)
    }

    pub fn open(&mut self, node: u64, flags: u32, clock: &Clock) -> Result<u64, ClientError> {
        let p = self.call(Request::Open { flags }, node, clock)?;
        Ok(fuse::parse_open_out(p)?)
    }

    /// Reads up to [`CHUNK`] bytes at `offset`; an empty slice is the end of the file.
    pub fn read(
        &mut self,
        node: u64,
        fh: u64,
        offset: u64,
        clock: &Clock,
    ) -> Result<&[u8], ClientError> {
        let size = CHUNK as u32;
        let capacity = fuse::OUT_HEADER_LEN + CHUNK;
        self.call_with_reply(Request::Read { fh, offset, size }, node, capacity, clock)
    }

    pub fn write(
        &mut self,
        node: u64,
        fh: u64,
        offset: u64,
        data: &[u8],
        clock: &Clock,
    ) -> Result<u32, ClientError> {
        let p = self.call(Request::Write { fh, offset, data }, node, clock)?;
        Ok(fuse::parse_write_out(p)?)
    }

    pub fn create(
        &mut self,
        parent: u64,
        name: &[u8],
        flags: u32,
        clock: &Clock,
    ) -> Result<(EntryOut, u64), ClientError> {
        let req = Request::Create {
            name,
            flags,
            mode: fuse::S_IFREG | 0o644,
        };
        let p = self.call(req, parent, clock)?;
        Ok(fuse::parse_create_out(p)?)
    }

    pub fn mkdir(
        &mut self,
        parent: u64,
        name: &[u8],
        clock: &Clock,
    ) -> Result<EntryOut, ClientError> {
        let p = self.call(Request::Mkdir { name, mode: 0o755 }, parent, clock)?;
        Ok(EntryOut::parse(p)?)
    }

    pub fn rename(
        &mut self,
        parent: u64,
        old: &[u8],
        new: &[u8],
        clock: &Clock,
    ) -> Result<(), ClientError> {
        self.call(
            Request::Rename {
                newdir: parent,
                old,
                new,
            },
            parent,
            clock,
        )?;
        Ok(())
    }

    pub fn unlink(&mut self, parent: u64, name: &[u8], clock: &Clock) -> Result<(), ClientError> {
        self.call(Request::Unlink { name }, parent, clock)?;
        Ok(())
    }

    pub fn rmdir(&mut self, parent: u64, name: &[u8], clock: &Clock) -> Result<(), ClientError> {
        self.call(Request::Rmdir { name }, parent, clock)?;
        Ok(())
    }

    pub fn flush(&mut self, node: u64, fh: u64, clock: &Clock) -> Result<(), ClientError> {
        self.call(Request::Flush { fh }, node, clock)?;
        Ok(())
    }

    pub fn release(
        &mut self,
        node: u64,
        fh: u64,
        flags: u32,
        clock: &Clock,
    ) -> Result<(), ClientError> {
        self.call(Request::Release { fh, flags }, node, clock)?;
        Ok(())
    }

    /// Reads the whole of `name` in the root directory, feeding each chunk to `sink`; returns
    /// the byte count.
    pub fn read_file(
        &mut self,
        name: &[u8],
        clock: &Clock,
        sink: impl FnMut(&[u8]),
    ) -> Result<u64, ClientError> {
        self.read_file_at(ROOT_ID, name, clock, sink)
    }

    /// As [`Self::read_file`], for `name` in directory `parent`.
    pub fn read_file_at(
        &mut self,
        parent: u64,
        name: &[u8],
        clock: &Clock,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<u64, ClientError> {
        let entry = self.lookup(parent, name, clock)?;
        let fh = self.open(entry.nodeid, fuse::O_RDONLY, clock)?;
        let mut offset = 0u64;
        let result = loop {
            match self.read(entry.nodeid, fh, offset, clock) {
                Ok([]) => break Ok(offset),
                Ok(data) => {
                    offset += data.len() as u64;
                    sink(data);
                }
                Err(e) => break Err(e),
            }
        };
        let released = self.release(entry.nodeid, fh, fuse::O_RDONLY, clock);
        let n = result?;
        released?;
        Ok(n)
    }
}
