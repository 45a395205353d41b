// The grader's measurement (hw9-grade): the notebook's line fit, trained again here with this
// notebook's own `mse`, on points drawn for this grading run.
if let Some(measure) = hw9::tasks::measure::Measure::from_env()? {
    hw9::tasks::measure::line_fit(&mut rec, &measure, "line", |pred, target| mse(pred, target));
}
