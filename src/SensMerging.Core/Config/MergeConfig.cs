namespace SensMerging.Core.Config;

/// <summary>
/// A parsed merge configuration: mergekit's keys (<c>merge_method</c>, <c>base_model</c>, <c>models</c>,
/// <c>parameters</c>, <c>dtype</c>, <c>out_dtype</c>, <c>tokenizer_source</c> / the <c>tokenizer</c> block,
/// <c>chat_template</c>, <c>slices</c>) plus this project's <c>decorators</c>, per-model <c>calibration</c>, <c>seed</c>
/// and <c>name</c>.
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

    /// <summary>
    /// mergekit's <c>tokenizer_source</c> or <c>tokenizer</c> block: when given, the output vocabulary is built from the
    /// tokenizers and the embedding / lm_head rows token by token (see <c>Tokenizers.OutputVocabulary</c>). Null: the
    /// tokenizer files are copied from the base model (or the first model), and embeddings of different sizes are merged
    /// on their common sub-matrix, as mergekit does without a tokenizer source.
    /// </summary>
    public TokenizerSettings? Tokenizer { get; init; }

    /// <summary>Where the tokenizer comes from (<see cref="Tokenizer"/>'s source); null means the base model (or the first model without a base).</summary>
    public TokenizerSource? TokenizerSource => Tokenizer?.Source;

    /// <summary>mergekit's <c>chat_template</c>: a built-in template's name, <c>auto</c>, or a Jinja template; null keeps the tokenizer's own.</summary>
    public string? ChatTemplate { get; init; }

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

    /// <summary>
    /// Every model the merge reads (base first), without duplicates: the merged models, then a tokenizer source that is not
    /// one of them (only its tokenizer files are read).
    /// </summary>
    public IReadOnlyList<ModelReference> ResolvedModels() =>
        TokenizerSource?.Model is { } tokenizer && !ReferencedModels().Any(m => m.SameModelAs(tokenizer))
            ? [.. ReferencedModels(), tokenizer]
            : ReferencedModels();

    /// <summary>Every model the merge merges (base first), without duplicates.</summary>
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

/// <summary>
/// One entry of <c>decorators</c>: a decorator plugin's name and its parameters, parsed as a strategy's are (a value, a
/// gradient list or a filter list; <see cref="DecoratorParameters.Resolve"/> evaluates them per layer group).
/// </summary>
public sealed record DecoratorConfig(string Name, IReadOnlyDictionary<string, ParameterValue> Parameters, int Line);

/// <summary>Where the merged model's tokenizer comes from.</summary>
public enum TokenizerSourceKind
{
    /// <summary>The base model's tokenizer (tokens at ids beyond its config's <c>vocab_size</c> removed).</summary>
    Base,

    /// <summary>A named model's tokenizer, as it is.</summary>
    Model,

    /// <summary>The base model's tokenizer with every other model's tokens added (mergekit's <c>union</c>).</summary>
    Union,
}

/// <summary>The tokenizer source: the base model, the union of all, or a named model.</summary>
public sealed record TokenizerSource(TokenizerSourceKind Kind, ModelReference? Model);

/// <summary>
/// The output vocabulary's settings: its source, tokens to add or whose embedding rows are chosen (mergekit's
/// <c>tokenizer.tokens</c>), and the multiple the embedding rows are padded to (<c>pad_to_multiple_of</c>).
/// </summary>
public sealed record TokenizerSettings(TokenizerSource Source, IReadOnlyDictionary<string, TokenEmbedding> Tokens, int? PadToMultipleOf);

/// <summary>One entry of <c>tokenizer.tokens</c>: where the token's embedding row comes from and whether it replaces the models' own rows.</summary>
/// <param name="Source">The row's source; null is refused when the row is needed.</param>
/// <param name="Force">Use <paramref name="Source"/> for every model, even those that have the token.</param>
public sealed record TokenEmbedding(TokenEmbeddingSource? Source, bool Force);

/// <summary>Kinds of <see cref="TokenEmbeddingSource"/>.</summary>
public enum TokenEmbeddingKind
{
    /// <summary>The row of the same token in a model (<c>source: some/model</c>).</summary>
    Model,

    /// <summary>A zero row (<c>kind: zero</c>).</summary>
    Zero,

    /// <summary>The row of another token, by text or id, in a model's own table (<c>kind: model_token</c>).</summary>
    ModelToken,
}

/// <summary>Where an embedding row comes from: a model's row of the token, a zero row, or a model's row of another token.</summary>
public sealed record TokenEmbeddingSource(TokenEmbeddingKind Kind, ModelReference? Model, string? Token = null, long? TokenId = null);

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
