namespace SensMerging.Core.Config;

/// <summary>
/// A parsed merge configuration: mergekit's keys (<c>merge_method</c>, <c>base_model</c>, <c>models</c>,
/// <c>parameters</c>, <c>dtype</c>, <c>out_dtype</c>, <c>tokenizer_source</c>/<c>tokenizer.source</c>, a single full-depth
/// <c>slices</c> entry) plus this project's <c>decorators</c>, per-model <c>calibration</c>, <c>seed</c> and <c>name</c>.
/// </summary>
public sealed record MergeConfig
{
    /// <summary>The merge method (strategy plugin name), lower case.</summary>
    public required string MergeMethod { get; init; }

    public ModelReference? BaseModel { get; init; }

    /// <summary>The models as listed (the base may be among them, as mergekit allows).</summary>
    public required IReadOnlyList<InputModel> Models { get; init; }

    /// <summary>Top-level <c>parameters</c> (and a single slice's <c>parameters</c>, which take precedence).</summary>
    public required IReadOnlyDictionary<string, ParameterValue> Parameters { get; init; }

    /// <summary>Compute dtype (<c>float32</c>, <c>float16</c>, <c>bfloat16</c>), or null for the host's default.</summary>
    public string? Dtype { get; init; }

    /// <summary>Output dtype, or null for the compute dtype.</summary>
    public string? OutDtype { get; init; }

    /// <summary>Where the tokenizer comes from; null means the base model (or the first model without a base).</summary>
    public TokenizerSource? TokenizerSource { get; init; }

    /// <summary>Decorators in order: the first wraps the strategy, each next one wraps the previous.</summary>
    public IReadOnlyList<DecoratorConfig> Decorators { get; init; } = [];

    public long? Seed { get; init; }

    public string? Name { get; init; }

    /// <summary>The layer range of a <c>slices</c> config (all sources share it); null for a <c>models</c> config.</summary>
    public LayerRange? LayerRange { get; init; }

    /// <summary>
    /// The slices of a config with several (a frankenmerge: output layers are each slice's layers in turn, renumbered), in
    /// output order; <see cref="Models"/> then lists every model they use once, and <see cref="LayerRange"/> is null. Null
    /// for a <c>models</c> config and for a single slice (which is the models syntax with a layer range).
    /// </summary>
    public IReadOnlyList<ConfigSlice>? Slices { get; init; }

    /// <summary>The config file, when loaded from one.</summary>
    public string? SourcePath { get; init; }

    /// <summary>The folder relative references resolve against.</summary>
    public required string BaseDirectory { get; init; }

    /// <summary>
    /// The models a strategy merges, in config order: for strategies that need a base, every listed model except
    /// the base (mergekit skips it the same way); otherwise all listed models.
    /// </summary>
    public IReadOnlyList<InputModel> Experts(bool requiresBaseModel) =>
        requiresBaseModel && BaseModel is not null
            ? [.. Models.Where(m => !m.Model.SameModelAs(BaseModel))]
            : Models;

    /// <summary>Every model the merge reads (base first), without duplicates.</summary>
    public IReadOnlyList<ModelReference> ReferencedModels()
    {
        var all = new List<ModelReference>();
        if (BaseModel is not null)
        {
            all.Add(BaseModel);
        }
        foreach (var model in Models)
        {
            if (!all.Any(m => m.SameModelAs(model.Model)))
            {
                all.Add(model.Model);
            }
        }
        return all;
    }
}

/// <summary>One entry of <c>models</c>.</summary>
/// <param name="Model">The model.</param>
/// <param name="Parameters">Its own parameters (falling back to the top-level ones).</param>
/// <param name="Calibration">Its calibration set (project extension), or null.</param>
/// <param name="Line">The line of the entry in the config.</param>
public sealed record InputModel(ModelReference Model, IReadOnlyDictionary<string, ParameterValue> Parameters, CalibrationSource? Calibration, int Line);

/// <summary>A model's calibration data: a file of samples, how many to use, and the token limit per sample.</summary>
/// <param name="Path">Full path of the samples file (relative paths resolve against the config's folder).</param>
/// <param name="Samples">How many samples to use, or null for <see cref="DefaultSamples"/>.</param>
/// <param name="MaxLength">Tokens per sample, or null for <see cref="DefaultMaxLength"/>.</param>
public sealed record CalibrationSource(string Path, int? Samples, int? MaxLength)
{
    /// <summary>Samples read from the file when the block does not say (the first 100).</summary>
    public const int DefaultSamples = 100;

    /// <summary>Tokens per sample when the block does not say.</summary>
    public const int DefaultMaxLength = 256;

    /// <summary>The samples to read: <see cref="Samples"/>, else <see cref="DefaultSamples"/>.</summary>
    public int SamplesOrDefault => Samples ?? DefaultSamples;

    /// <summary>The token limit: <see cref="MaxLength"/>, else <see cref="DefaultMaxLength"/>.</summary>
    public int MaxLengthOrDefault => MaxLength ?? DefaultMaxLength;
}

/// <summary>One entry of <c>decorators</c>: a decorator plugin's name and its parameters (scalars or lists of scalars).</summary>
public sealed record DecoratorConfig(string Name, IReadOnlyDictionary<string, object> Parameters, int Line);

/// <summary>Where the merged model's tokenizer comes from.</summary>
public enum TokenizerSourceKind
{
    Base,
    Model,
}

/// <summary>The tokenizer source: the base model, or a named model.</summary>
public sealed record TokenizerSource(TokenizerSourceKind Kind, ModelReference? Model);

/// <summary>A half-open block range [Start, End).</summary>
public sealed record LayerRange(int Start, int End)
{
    /// <summary>How many layers the range takes.</summary>
    public int Count => End - Start;
}

/// <summary>One slice of a multi-slice config (a frankenmerge): its sources and its <c>parameters</c> (over the top-level ones).</summary>
/// <param name="Sources">The models merged into the slice's output layers, each with the layers it gives (all of one length).</param>
/// <param name="Parameters">The slice's own parameters; they take precedence over the config's top-level ones.</param>
/// <param name="Line">The slice's line in the config (for error messages).</param>
public sealed record ConfigSlice(IReadOnlyList<SliceSource> Sources, IReadOnlyDictionary<string, ParameterValue> Parameters, int Line);

/// <summary>One source of a <see cref="ConfigSlice"/>: a model (with its per-source parameters) and the layers taken from it.</summary>
public sealed record SliceSource(InputModel Model, LayerRange Range);
