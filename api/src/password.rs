//! Password hashing with argon2id at OWASP's parameters (19 MiB, 2 passes, 1 lane), run off the
//! async threads.
//!
//! Each hash needs 19 MiB of working memory. Allocated afresh per hash, glibc keeps the freed
//! blocks in its per-thread arenas: 70 registrations at once left a server at 1.2 GB resident.
//! So at most one hash per core runs at a time, each in one of a few working buffers that are
//! reused: the hashing memory stays at cores × 19 MiB, whatever the login rate.

use std::sync::{LazyLock, Mutex};

use argon2::password_hash::{
    Output, ParamsString, PasswordHash, PasswordVerifier, Salt, SaltString,
};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::Semaphore;

use crate::error::ApiError;

/// OWASP Password Storage Cheat Sheet: m=19456 KiB, t=2, p=1.
const MEMORY_KIB: u32 = 19 * 1024;

fn params() -> Params {
    // These constants are valid.
    Params::new(MEMORY_KIB, 2, 1, None).expect("OWASP argon2 parameters are valid")
}

fn hasher() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params())
}

/// Hashes running at once: one per core.
static PERMITS: LazyLock<Semaphore> =
    LazyLock::new(|| Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())));

/// Working memory of finished hashes, for the next ones.
static BUFFERS: Mutex<Vec<Vec<Block>>> = Mutex::new(Vec::new());

/// Runs `work` on a blocking thread with a working buffer of `MEMORY_KIB` blocks, one hash per
/// core at a time.
async fn with_memory<T: Send + 'static>(
    work: impl FnOnce(&mut [Block]) -> T + Send + 'static,
) -> Result<T, ApiError> {
    let _permit = PERMITS
        .acquire()
        .await
        .map_err(|e| ApiError::internal(&e))?;
    tokio::task::spawn_blocking(move || {
        let taken = BUFFERS.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut blocks = taken.unwrap_or_else(|| vec![Block::default(); MEMORY_KIB as usize]);
        let result = work(&mut blocks);
        BUFFERS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(blocks);
        result
    })
    .await
    .map_err(|e| ApiError::internal(&e))
}

/// The argon2id output for `password` with `salt`, in `blocks`.
fn compute(password: &[u8], salt: Salt<'_>, blocks: &mut [Block]) -> Option<Output> {
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes).ok()?;
    Output::init_with(Params::DEFAULT_OUTPUT_LEN, |out| {
        hasher()
            .hash_password_into_with_memory(password, salt_bytes, out, &mut *blocks)
            .map_err(|_| argon2::password_hash::Error::Crypto)
    })
    .ok()
}

/// A hash to verify against when the user does not exist, so both cases take the same time.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    let mut blocks = vec![Block::default(); MEMORY_KIB as usize];
    phc(b"no such user, no such password", &salt, &mut blocks).unwrap_or_default()
});

/// The PHC string of `password` hashed with `salt`.
fn phc(password: &[u8], salt: &SaltString, blocks: &mut [Block]) -> Option<String> {
    let output = compute(password, salt.as_salt(), blocks)?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params()).ok()?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Some(hash.to_string())
}

/// Hashes `password` into a PHC string.
pub(crate) async fn hash(password: String) -> Result<String, ApiError> {
    with_memory(move |blocks| {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        phc(password.as_bytes(), &salt, blocks)
    })
    .await?
    .ok_or_else(|| ApiError::internal(&"argon2 hashing failed"))
}

/// Checks `password` against `phc` (or against a dummy hash when `phc` is `None`, returning
/// false after the same work).
pub(crate) async fn verify(password: String, phc: Option<String>) -> Result<bool, ApiError> {
    with_memory(move |blocks| {
        let known = phc.is_some();
        let phc = phc.unwrap_or_else(|| DUMMY_HASH.clone());
        let Ok(parsed) = PasswordHash::new(&phc) else {
            return false;
        };
        let ours = ParamsString::try_from(&params()).ok();
        let matches = match (&parsed.salt, &parsed.hash) {
            // Our parameters: in the pooled buffer (Output compares in constant time).
            (Some(salt), Some(expected)) if Some(&parsed.params) == ours.as_ref() => {
                compute(password.as_bytes(), *salt, blocks).as_ref() == Some(expected)
            }
            // Older parameters: the library's own path.
            _ => hasher()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok(),
        };
        matches && known
    })
    .await
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::{PasswordHasher, SaltString};

    #[tokio::test]
    async fn hashes_are_argon2id_and_verify() {
        let phc = super::hash("correct horse battery".into())
            .await
            .expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(
            super::verify("correct horse battery".into(), Some(phc.clone()))
                .await
                .expect("verify")
        );
        assert!(
            !super::verify("wrong horse battery".into(), Some(phc))
                .await
                .expect("verify")
        );
        assert!(
            !super::verify("anything at all".into(), None)
                .await
                .expect("verify")
        );
    }

    #[tokio::test]
    async fn hashes_match_the_library_and_older_parameters_still_verify() {
        // The pooled path computes what argon2's own hasher does.
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let library = super::hasher()
            .hash_password(b"same input", &salt)
            .unwrap()
            .to_string();
        let mut blocks = vec![argon2::Block::default(); super::MEMORY_KIB as usize];
        assert_eq!(
            super::phc(b"same input", &salt, &mut blocks).unwrap(),
            library
        );
        // A hash made with other parameters verifies through the library.
        let other = argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(8 * 1024, 1, 1, None).unwrap(),
        )
        .hash_password(b"old password", &salt)
        .unwrap()
        .to_string();
        assert!(
            super::verify("old password".into(), Some(other.clone()))
                .await
                .unwrap()
        );
        assert!(
            !super::verify("new password".into(), Some(other))
                .await
                .unwrap()
        );
    }
}
