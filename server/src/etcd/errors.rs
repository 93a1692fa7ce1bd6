//! The one place where core's errors become gRPC statuses with the texts
//! etcd clients recognise (etcd `api/v3rpc/rpctypes`). Clients such as
//! etcdctl and the Go client match on these exact strings.

use t4_core::{Error, Invalid};
use tonic::{Code, Status};

/// etcd's status for a core error.
#[must_use]
pub fn status(error: &Error) -> Status {
    let (code, text): (Code, String) = match error {
        Error::Compacted { .. } => (
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted".into(),
        ),
        Error::FutureRevision => (
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision".into(),
        ),
        Error::LeaseNotFound => (
            Code::NotFound,
            "etcdserver: requested lease not found".into(),
        ),
        Error::LeaseExists => (
            Code::FailedPrecondition,
            "etcdserver: lease already exists".into(),
        ),
        Error::NoSpace => (
            Code::ResourceExhausted,
            "etcdserver: mvcc: database space exceeded".into(),
        ),
        // etcd answers this one OutOfRange, not InvalidArgument.
        Error::InvalidArgument(Invalid::LeaseTtlTooLarge) => {
            (Code::OutOfRange, "etcdserver: too large lease TTL".into())
        }
        Error::InvalidArgument(invalid) => (Code::InvalidArgument, invalid_text(*invalid).into()),
        Error::Unavailable(why) => (Code::Unavailable, format!("etcdserver: {why}")),
        // etcd's ErrTimeout text, which clients know means "may have
        // happened".
        Error::Timeout(why) => (
            Code::Unavailable,
            format!("etcdserver: request timed out ({why})"),
        ),
        // Unavailable makes clients try another endpoint: the new node.
        Error::Fenced(why) => (Code::Unavailable, format!("t4: node fenced: {why}")),
        Error::Unimplemented(what) => (
            Code::Unimplemented,
            format!("t4: {what} is not implemented"),
        ),
        Error::Internal(why) => (Code::Internal, format!("etcdserver: {why}")),
        Error::MemberNotFound => (Code::NotFound, "etcdserver: member not found".into()),
        Error::MembershipRefused(why) => (Code::FailedPrecondition, format!("etcdserver: {why}")),
    };
    Status::new(code, text)
}

fn invalid_text(invalid: Invalid) -> &'static str {
    match invalid {
        Invalid::EmptyKey => "etcdserver: key is not provided",
        Invalid::KeyNotFound => "etcdserver: key not found",
        Invalid::ValueProvided => "etcdserver: value is provided",
        Invalid::LeaseProvided => "etcdserver: lease is provided",
        Invalid::TooManyOps => "etcdserver: too many operations in txn request",
        Invalid::DuplicateKey => "etcdserver: duplicate key given in txn request",
        Invalid::RequestTooLarge => "etcdserver: request is too large",
        Invalid::InvalidSortOption => "etcdserver: invalid sort option",
        Invalid::LeaseTtlTooLarge => "etcdserver: too large lease TTL",
        Invalid::NegativeLeaseTtl => "etcdserver: lease TTL must not be negative",
        Invalid::NegativeLeaseId => "etcdserver: lease ID must not be negative",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact strings etcd clients match on.
    #[test]
    fn etcd_error_texts() {
        let s = status(&Error::Compacted {
            compact_revision: 3,
        });
        assert_eq!(
            (s.code(), s.message()),
            (
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted"
            )
        );
        let s = status(&Error::FutureRevision);
        assert_eq!(
            s.message(),
            "etcdserver: mvcc: required revision is a future revision"
        );
        let s = status(&Error::InvalidArgument(Invalid::DuplicateKey));
        assert_eq!(
            (s.code(), s.message()),
            (
                Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request"
            )
        );
        let s = status(&Error::InvalidArgument(Invalid::TooManyOps));
        assert_eq!(
            s.message(),
            "etcdserver: too many operations in txn request"
        );
        let s = status(&Error::InvalidArgument(Invalid::RequestTooLarge));
        assert_eq!(s.message(), "etcdserver: request is too large");
        let s = status(&Error::InvalidArgument(Invalid::EmptyKey));
        assert_eq!(s.message(), "etcdserver: key is not provided");
        let s = status(&Error::LeaseNotFound);
        assert_eq!(
            (s.code(), s.message()),
            (Code::NotFound, "etcdserver: requested lease not found")
        );
    }
}
