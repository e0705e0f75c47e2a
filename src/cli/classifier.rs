//! A saved classifier: a network (`keel train --save`) or a classical
//! baseline (`keel baseline --save`), used alike by evaluate and predict.

use keel::classical::Baseline;
use keel::model::DataInfo;
use keel::prelude::*;
use keel::tensor::Samples;
use std::path::Path;

pub enum Classifier {
    Network(Box<Model>),
    Baseline(Box<Baseline>),
}

impl Classifier {
    /// The model or baseline in the keel file at `path`.
    pub fn load(path: &Path) -> keel::Result<Classifier> {
        Ok(if Baseline::is_baseline_file(path)? {
            Classifier::Baseline(Box::new(Baseline::load(path)?))
        } else {
            Classifier::Network(Box::new(Model::load(path)?))
        })
    }

    /// The shape of one input.
    pub fn input_shape(&self) -> keel::Result<Vec<usize>> {
        match self {
            Classifier::Network(model) => Ok(model.shapes()?[0].clone()),
            Classifier::Baseline(baseline) => Ok(baseline.input_shape().to_vec()),
        }
    }

    pub fn data_info(&self) -> Option<&DataInfo> {
        match self {
            Classifier::Network(model) => model.data_info(),
            Classifier::Baseline(baseline) => Some(baseline.data_info()),
        }
    }

    /// Input = pixel byte * scale.
    pub fn scale(&self) -> f32 {
        self.data_info().map_or(1.0 / 255.0, |i| i.scale)
    }

    /// One name per class, in class order.
    pub fn class_names(&self) -> keel::Result<Vec<String>> {
        match self {
            Classifier::Network(model) => Ok(model.class_names(model.output_shape()?.iter().product::<usize>().max(2))),
            Classifier::Baseline(baseline) => Ok(baseline.class_names()),
        }
    }

    /// (N, classes) class probabilities (a baseline's class scores).
    pub fn class_probabilities(&mut self, x: &dyn Samples) -> keel::Result<Tensor> {
        match self {
            Classifier::Network(model) => model.class_probabilities(x),
            Classifier::Baseline(baseline) => baseline.scores(x),
        }
    }
}
