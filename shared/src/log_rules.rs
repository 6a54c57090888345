//! What a log line says, judged the same way on the slave (the first such line becomes a failed
//! build's reason) and in the console ("jump to first error").

/// Lines that usually say why an image build failed.
pub fn looks_like_error(line: &str) -> bool {
    let l = line.trim_start();
    l.starts_with("E: ")
        || l.starts_with("Error: ")
        || l.starts_with("ERROR")
        || l.starts_with("fatal: ")
        || l.contains("No space left on device")
        || l.starts_with("mmdebstrap: error")
}

#[cfg(test)]
mod tests {
    use super::looks_like_error;

    #[test]
    fn error_lines() {
        assert!(looks_like_error("E: Unable to locate package foo"));
        assert!(looks_like_error("  fatal: not a git repository"));
        assert!(looks_like_error("write: No space left on device"));
        assert!(!looks_like_error("0 errors"));
    }
}
