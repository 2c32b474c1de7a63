//! Person detections as both workers use them: the analysis worker detects persons (fence rules)
//! and keeps each camera's recent detections; the crowd worker counts them per zone and grid cell.

use sightline_vision::persons::Person;

/// Person detections kept per camera (`CameraHandle::persons`) for the crowd worker's median (at
/// most one interval's worth is used).
pub const PERSON_HISTORY: usize = 64;

/// A person's foot point (bottom centre of the box) in normalised image coordinates: where
/// they stand, which is what a zone on the ground means.
pub fn foot(p: &Person, (w, h): (f32, f32)) -> [f32; 2] {
    [(p.bbox[0] + p.bbox[2] / 2.0) / w, (p.bbox[1] + p.bbox[3]) / h]
}
