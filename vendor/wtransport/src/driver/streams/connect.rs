use tracing::debug;
use wtransport_proto::bytes::IoReadError;
use wtransport_proto::capsule::capsules;
use wtransport_proto::capsule::Capsule;
use wtransport_proto::capsule::{self};
use wtransport_proto::error::ErrorCode;
use wtransport_proto::frame::FrameKind;
use wtransport_proto::varint::VarInt;

use super::session::StreamSession;
use super::ProtoReadError;
use crate::driver::DriverError;
use crate::error::ApplicationClose;
use std::future::pending;
use tokio::task::JoinHandle;

/// The session's CONNECT stream.
///
/// Chorus patch: read by a task of its own, for the reason given on
/// `RemoteSettingsStream`: the driver's `select!` drops a pending read on
/// every pass, and a capsule read half-way would lose its first part.
pub struct ConnectStream {
    reader: Option<JoinHandle<DriverError>>,
}

impl ConnectStream {
    pub fn empty() -> Self {
        Self { reader: None }
    }

    pub fn is_empty(&self) -> bool {
        self.reader.is_none()
    }

    pub fn set_stream(&mut self, stream: StreamSession) {
        self.reader = Some(tokio::spawn(read_connect_stream(stream)));
    }

    pub async fn run(&mut self) -> DriverError {
        let Some(reader) = self.reader.as_mut() else {
            return pending().await;
        };

        let error = reader.await.unwrap_or(DriverError::NotConnected);
        // A finished handle must not be polled again.
        self.reader = None;
        error
    }
}

impl Drop for ConnectStream {
    fn drop(&mut self) {
        if let Some(reader) = &self.reader {
            reader.abort();
        }
    }
}

/// Reads the CONNECT stream until the session ends: a
/// CLOSE_WEBTRANSPORT_SESSION capsule, a FIN, or an error.
async fn read_connect_stream(mut stream: StreamSession) -> DriverError {
    loop {
        return match stream.read_frame().await {
            Ok(frame) => {
                if !matches!(frame.kind(), FrameKind::Data) {
                    debug!("Skipping non-data frame of kind {:?}", frame.kind());
                    continue;
                }

                let capsule = match Capsule::with_frame(&frame) {
                    Some(capsule)
                        if matches!(
                            capsule.kind(),
                            capsule::CapsuleKind::CloseWebTransportSession
                        ) =>
                    {
                        capsule
                    }
                    // Unknown capsule, skip it
                    _ => {
                        debug!(
                            "Unknown capsule of kind {:?} of {}B",
                            frame.kind(),
                            frame.payload().len()
                        );

                        continue;
                    }
                };

                let close_session = match capsules::CloseWebTransportSession::with_capsule(&capsule)
                {
                    Ok(close_session) => close_session,
                    Err(error_code) => return DriverError::Proto(error_code),
                };

                // reset right away to avoid receiving additional data which requires resetting with ErrorCode::Message.
                stream.reset(ErrorCode::NoError.to_code());

                DriverError::ApplicationClosed(ApplicationClose::new(
                    close_session.error_code(),
                    close_session
                        .reason()
                        .as_bytes()
                        .to_vec()
                        .into_boxed_slice(),
                ))
            }
            Err(ProtoReadError::H3(error_code)) => DriverError::Proto(error_code),
            Err(ProtoReadError::IO(io_error)) => match io_error {
                // Cleanly terminating a CONNECT stream without a CLOSE_WEBTRANSPORT_SESSION
                // capsule SHALL be semantically equivalent to terminating it with a
                // CLOSE_WEBTRANSPORT_SESSION capsule that has an error code of 0 and an empty error string.
                IoReadError::ImmediateFin => DriverError::ApplicationClosed(ApplicationClose::new(
                    VarInt::from_u32(0),
                    Box::new([]),
                )),
                IoReadError::UnexpectedFin | IoReadError::Reset => {
                    DriverError::Proto(ErrorCode::ClosedCriticalStream)
                }
                IoReadError::NotConnected => DriverError::NotConnected,
            },
        };
    }
}
