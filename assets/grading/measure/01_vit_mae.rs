// The grader's measurement (hw9-grade --rerun): the submitted weights loaded into this notebook's
// own model code, evaluated on the held-out test images, whose labels stay with the grader.
if let Some(measure) = hw9::tasks::measure::Measure::from_env()? {
    let plan = hw9::plan::VitMaePlan::for_profile(measure.profile());
    hw9::tasks::measure::classifier(&mut rec, &measure, "vit", |root| ClassificationTransformer::new(root, &plan.vit));
    hw9::tasks::measure::classifier(&mut rec, &measure, "probe", |root| {
        let frozen = MaskedAutoEncoder::new(&(root / "mae"), &plan.mae);
        MaeClassifier::new(&(root / "classifier"), frozen, plan.mae.encoder.d_model, 10, true)
    });
    hw9::tasks::measure::classifier(&mut rec, &measure, "finetune", |root| {
        let pretrained = MaskedAutoEncoder::new(&(root / "mae"), &plan.mae);
        MaeClassifier::new(&(root / "classifier"), pretrained, plan.mae.encoder.d_model, 10, false)
    });
}
