//! Regular expressions for log search, case-insensitive. In the browser they are the browser's
//! own `RegExp` (JavaScript syntax), so the console's wasm carries no regex engine of its own —
//! a fifth less to download. Natively (the unit tests) `regex-lite` stands in with the same API;
//! the browser tier (tests/browser/log-search.mjs) exercises the real one.

/// A compiled, case-insensitive pattern.
pub struct Regex(engine::Compiled);

impl Regex {
    /// The pattern, or the engine's reason it is not one ("bad regex: …").
    pub fn new(pattern: &str) -> Result<Regex, String> {
        engine::compile(pattern)
            .map(Regex)
            .map_err(|reason| format!("bad regex: {reason}"))
    }

    /// The byte ranges of the non-empty matches in `text`, in order, appended to `out`.
    pub fn find_into(&self, text: &str, out: &mut Vec<(usize, usize)>) {
        engine::find_into(&self.0, text, out)
    }
}

#[cfg(target_arch = "wasm32")]
mod engine {
    use js_sys::{Array, Reflect, RegExp};
    use wasm_bindgen::{JsCast, JsValue};

    pub type Compiled = RegExp;

    pub fn compile(pattern: &str) -> Result<RegExp, String> {
        // `new RegExp(p, "gi")` through Reflect, which turns a SyntaxError into an Err.
        let ctor = Reflect::get(&js_sys::global(), &JsValue::from_str("RegExp"))
            .map_err(|_| "this browser has no RegExp".to_string())?;
        let args = Array::of2(&JsValue::from_str(pattern), &JsValue::from_str("gi"));
        Reflect::construct(ctor.unchecked_ref::<js_sys::Function>(), &args)
            .map(|re| re.unchecked_into())
            .map_err(|e| {
                e.dyn_ref::<js_sys::Error>()
                    .map(|e| String::from(e.message()))
                    .unwrap_or_else(|| "not a regular expression".into())
            })
    }

    pub fn find_into(re: &RegExp, text: &str, out: &mut Vec<(usize, usize)>) {
        re.set_last_index(0);
        let mut utf16 = Utf16ToByte::new(text);
        while let Some(m) = re.exec(text) {
            let start = Reflect::get(&m, &JsValue::from_str("index"))
                .ok()
                .and_then(|i| i.as_f64())
                .unwrap_or(0.0) as u32;
            let matched = m.get(0).as_string().unwrap_or_default();
            if matched.is_empty() {
                // An empty match does not move `lastIndex`: step over one code unit.
                re.set_last_index(re.last_index() + 1);
                if re.last_index() as usize > text.len() {
                    break;
                }
                continue;
            }
            let from = utf16.byte(start);
            out.push((from, from + matched.len()));
        }
    }

    /// JavaScript counts UTF-16 code units; the log's text is indexed by bytes.
    struct Utf16ToByte<'a> {
        chars: std::str::CharIndices<'a>,
        ascii: bool,
        units: u32,
        byte: usize,
    }

    impl<'a> Utf16ToByte<'a> {
        fn new(text: &'a str) -> Self {
            Utf16ToByte {
                chars: text.char_indices(),
                ascii: text.is_ascii(),
                units: 0,
                byte: 0,
            }
        }

        /// The byte offset of code unit `unit` (asked for in increasing order).
        fn byte(&mut self, unit: u32) -> usize {
            if self.ascii {
                return unit as usize;
            }
            while self.units < unit {
                match self.chars.next() {
                    Some((_, c)) => {
                        self.units += c.len_utf16() as u32;
                        self.byte += c.len_utf8();
                    }
                    None => break,
                }
            }
            self.byte
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod engine {
    pub type Compiled = regex_lite::Regex;

    pub fn compile(pattern: &str) -> Result<Compiled, String> {
        regex_lite::RegexBuilder::new(pattern)
            .case_insensitive(true)
            .build()
            .map_err(|e| e.to_string().lines().last().unwrap_or("").to_string())
    }

    pub fn find_into(re: &Compiled, text: &str, out: &mut Vec<(usize, usize)>) {
        out.extend(
            re.find_iter(text)
                .filter(|m| !m.is_empty())
                .map(|m| (m.start(), m.end())),
        );
    }
}
