//! Span files recorded by other programs (CSV, Chrome trace JSON): parser
//! not written yet, nothing public here.
