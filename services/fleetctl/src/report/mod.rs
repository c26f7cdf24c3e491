//! Surveillance reports over the archive. So far: the statistics they rest on; the
//! `fleetctl report` commands that query the archive and render tables and SVG curves
//! come with the rest of step 5.

pub mod survival;
