// The grader's measurement (hw9-grade --rerun): the submitted weights (after the last epoch and
// the one before) loaded into this notebook's own layers, evaluated on the validation pairs.
if let Some(measure) = hw9::tasks::measure::Measure::from_env()? {
    let plan = hw9::tasks::measure::summarization_plan(&measure)?;
    let layer = |p: &nn::Path, c: &LayerConfig, stack: Stack| -> Box<dyn SeqLayer> { Box::new(TransformerLayer::new(p, c, stack)) };
    hw9::tasks::measure::summarizer(&mut rec, &measure, "summarizer", |root| Summarizer::with_layers(root, &plan.model, layer, make_positions));
    hw9::tasks::measure::summarizer(&mut rec, &measure, "summarizer_previous", |root| Summarizer::with_layers(root, &plan.model, layer, make_positions));
}
