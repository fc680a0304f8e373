//! Colours of the page's series: a fixed palette of distinct colours that read on white,
//! then evenly spread hues, so that no two series of one chart share a colour however
//! many there are (the page once had 15 steps on 10 colours).

/// Sixteen colours far apart in hue or lightness, none too pale for a 1.5 px line on
/// white; the first fifteen go to the steps in script order, so a step keeps its colour
/// on every chart.
const PALETTE: [&str; 16] = [
    "#4363d8", // blue
    "#f58231", // orange
    "#3cb44b", // green
    "#e6194b", // red
    "#911eb4", // purple
    "#9a6324", // brown
    "#f032e6", // magenta
    "#808080", // grey
    "#808000", // olive
    "#42d4f4", // cyan
    "#000075", // navy
    "#469990", // teal
    "#800000", // maroon
    "#e6a700", // amber
    "#000000", // black
    "#9b8fe0", // lavender
];

/// The golden angle in degrees: consecutive hues past the palette land far apart and
/// never repeat.
const GOLDEN_ANGLE_DEG: f64 = 137.508;

/// The `i`th colour: the palette's, then hues spaced by the golden angle at a saturation
/// and lightness that read on white.
pub(super) fn colour(i: usize) -> String {
    match PALETTE.get(i) {
        Some(c) => (*c).to_string(),
        None => {
            let hue = ((i - PALETTE.len()) as f64 * GOLDEN_ANGLE_DEG + 20.0) % 360.0;
            // Alternate two lightnesses so that neighbours in hue differ in tone too.
            let lightness = if i % 2 == 0 { 38 } else { 52 };
            format!("hsl({hue:.0},70%,{lightness}%)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn colours_are_distinct_beyond_the_palette() {
        let colours: BTreeSet<String> = (0..60).map(colour).collect();
        assert_eq!(colours.len(), 60);
    }
}
