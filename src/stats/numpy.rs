//! numpy's text for a float, so our replies read exactly as the original
//! Python experiment's.

/// numpy's `str(np.float64(x))` for finite x.
///
/// numpy prints the fewest significant digits that read back as `x` and,
/// of those, the closest to `x`, an exact tie going to the even digit
/// (`651847949857580.25` prints as `...580.2`, and so does the mean of a
/// 32768-byte image, `100.00003051757812`). Rust's `{}` finds the same digit
/// count but breaks ties upwards, so only the count is taken from it and the
/// digits come from Rust's exact formatting, which rounds ties to even.
///
/// numpy goes scientific when `x` is nonzero and `|x| < 1e-4` or
/// `|x| >= 1e16`, writing the exponent signed and at least two digits long
/// (`1e-05`, `1e+16`, `1e-300`) with no `.0` on a one-digit mantissa;
/// positional output always has a `.` (`127.0`).
pub fn format_float(x: f64) -> String {
    if !x.is_finite() {
        // Rust's `NaN` is numpy's `nan`; `inf` and `-inf` agree.
        return x.to_string().to_lowercase();
    }
    let shortest = format!("{x:e}");
    let (mantissa, exp) = shortest.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("{:e} exponent is an integer");
    let digits = mantissa.bytes().filter(u8::is_ascii_digit).count() as i32;
    let abs = x.abs();
    if abs == 0.0 || (1e-4..1e16).contains(&abs) {
        let decimals = (digits - 1 - exp).max(0) as usize;
        let s = format!("{x:.decimals$}");
        if decimals == 0 { s + ".0" } else { s }
    } else {
        // At a power of two the gap below `x` is half the gap above, so the
        // nearest decimal may not read back while Rust's shortest does.
        // (Every power of two in the positional range prints exactly.)
        let nearest = format!("{x:.prec$e}", prec = (digits - 1) as usize);
        let s = if nearest.parse() == Ok(x) {
            nearest
        } else {
            shortest
        };
        let (mantissa, exp) = s.split_once('e').expect("{:e} has an exponent");
        let exp: i32 = exp.parse().expect("{:e} exponent is an integer");
        format!("{mantissa}e{exp:+03}")
    }
}
