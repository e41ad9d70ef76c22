//! Response flags from the host, in either encoding: wasmesh's short-code text
//! (`wasmesh.response.flags`: `UF,URX`) or Envoy's `response.flags` 8-byte LE bitmask.

/// Envoy's `ResponseFlag` bits (`envoy/stream_info/stream_info.h`), lowest bit first.
const ENVOY_BITS: &[&str] = &[
    "LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE", "DC", "URX", "SI", "IH",
    "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF", "DO",
];

/// Short codes from Envoy's `response.flags` bitmask (unknown bits are skipped).
pub fn from_envoy_bits(bits: u64) -> Vec<String> {
    ENVOY_BITS.iter().enumerate().filter(|(i, _)| bits & (1 << i) != 0).map(|(_, c)| c.to_string()).collect()
}

/// Short codes from `UF,URX` text; `-` and empty mean none. Anything that is not a list
/// of upper-case codes gives `None`.
pub fn from_text(text: &[u8]) -> Option<Vec<String>> {
    let s = std::str::from_utf8(text).ok()?.trim();
    if s.is_empty() || s == "-" {
        return Some(Vec::new());
    }
    let codes: Vec<String> = s.split(',').map(|c| c.trim().to_string()).collect();
    codes.iter().all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_uppercase())).then_some(codes)
}

/// Decodes the value of `wasmesh.response.flags` (text) or `response.flags`: text when
/// it reads as short codes, else Envoy's 8-byte bitmask; `None` when neither.
pub fn decode(bytes: &[u8]) -> Option<Vec<String>> {
    if let Some(codes) = from_text(bytes) {
        return Some(codes);
    }
    let bits = <[u8; 8]>::try_from(bytes).ok().map(u64::from_le_bytes)?;
    Some(from_envoy_bits(bits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_bitmask_encodings_decode() {
        assert_eq!(decode(b"UF,URX"), Some(vec!["UF".to_string(), "URX".to_string()]));
        assert_eq!(decode(b"-"), Some(vec![]));
        assert_eq!(decode(b""), Some(vec![]));
        // UF = 0x20, URX = 0x8000 in Envoy's enum.
        assert_eq!(decode(&0x8020u64.to_le_bytes()), Some(vec!["UF".to_string(), "URX".to_string()]));
        assert_eq!(decode(&0u64.to_le_bytes()), Some(vec![]));
        assert_eq!(decode(&[1, 2, 3]), None);
        assert_eq!(from_envoy_bits(1 << 7), vec!["UO".to_string()]);
        assert_eq!(from_envoy_bits(1 << 62), Vec::<String>::new());
    }
}
