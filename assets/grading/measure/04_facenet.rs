// The grader's measurement (hw9-grade --rerun): the submitted weights loaded into this notebook's
// own network, embedding held-out images whose labels stay with the grader.
if let Some(measure) = hw9::tasks::measure::Measure::from_env()? {
    let plan = hw9::plan::FacenetPlan::for_profile(measure.profile());
    hw9::tasks::measure::embedding(&mut rec, &measure, "facenet", |root| FaceNet::new(root, &plan.model));
}
