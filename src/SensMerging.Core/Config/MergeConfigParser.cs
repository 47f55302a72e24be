using System.Globalization;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace SensMerging.Core.Config;

/// <summary>
/// Reads mergekit-style YAML into a <see cref="MergeConfig"/>. Every key is checked: keys this host does not support
/// (mergekit's <c>modules</c>, slice <c>residual_weight</c>...) are reported by name and line, never ignored. All
/// problems found are reported together.
/// </summary>
public static class MergeConfigParser
{
    private static readonly HashSet<string> TopLevelKeys =
    [
        "merge_method", "base_model", "models", "slices", "parameters", "dtype", "out_dtype", "tokenizer_source", "tokenizer",
        "chat_template", "decorators", "seed", "name",
    ];

    private static readonly Dictionary<string, string> KnownUnsupported = new(StringComparer.Ordinal)
    {
        ["modules"] = "mergekit modules are not supported",
        ["residual_weight"] = "slice residual weights are not supported",
    };

    /// <summary>Reads and parses a config file; relative model and calibration paths resolve against its folder.</summary>
    public static async Task<MergeConfig> LoadAsync(string path, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(path);
        var full = Path.GetFullPath(path);
        if (!File.Exists(full))
        {
            throw new FileNotFoundException($"merge config '{full}' does not exist", full);
        }
        var text = await File.ReadAllTextAsync(full, cancellationToken).ConfigureAwait(false);
        return Parse(text, full, Path.GetDirectoryName(full));
    }

    /// <summary>Parses YAML text. <paramref name="baseDirectory"/> defaults to the current directory.</summary>
    public static MergeConfig Parse(string yaml, string? sourcePath = null, string? baseDirectory = null)
    {
        ArgumentNullException.ThrowIfNull(yaml);
        var directory = Path.GetFullPath(baseDirectory ?? Directory.GetCurrentDirectory());
        var stream = new YamlStream();
        var parser = new Parser(new StringReader(yaml));
        try
        {
            stream.Load(parser);
        }
        catch (YamlException e)
        {
            var detail = (e.InnerException?.Message ?? e.Message).Trim();
            throw new MergeConfigException(sourcePath, [$"malformed YAML at line {e.Start.Line}, column {e.Start.Column}: {detail}"]);
        }
        catch (InvalidOperationException e)
        {
            // The scanner reports some unterminated constructs this way; the last event read tells where it stopped.
            var mark = parser.Current?.End;
            var where = mark is null ? string.Empty : $" after line {mark.Value.Line}, column {mark.Value.Column}";
            throw new MergeConfigException(sourcePath, [$"malformed YAML{where}: unterminated or invalid construct (for example an unclosed '[' or '{{') ({e.Message})"]);
        }
        if (stream.Documents.Count == 0 || stream.Documents[0].RootNode is YamlScalarNode { Value: null or "" })
        {
            throw new MergeConfigException(sourcePath, ["the config is empty"]);
        }
        if (stream.Documents.Count > 1)
        {
            throw new MergeConfigException(sourcePath, [$"line {Line(stream.Documents[1].RootNode)}: the file holds several YAML documents; a config is one"]);
        }
        var reader = new Reader(directory);
        var config = reader.Read(stream.Documents[0].RootNode, sourcePath);
        if (reader.Problems.Count > 0)
        {
            throw new MergeConfigException(sourcePath, reader.Problems);
        }
        return config!;
    }

    internal static int Line(YamlNode node) => (int)node.Start.Line;

    /// <summary>Walks the YAML tree, collecting problems instead of stopping at the first.</summary>
    private sealed class Reader(string directory)
    {
        public List<string> Problems { get; } = [];

        public MergeConfig? Read(YamlNode root, string? sourcePath)
        {
            if (root is not YamlMappingNode map)
            {
                Problem(root, "the config must be a mapping of keys (merge_method, models, ...)");
                return null;
            }
            string? method = null;
            ModelReference? baseModel = null;
            List<InputModel>? models = null;
            List<InputModel>? sliceModels = null;
            LayerRange? layerRange = null;
            var parameters = new Dictionary<string, ParameterValue>(StringComparer.Ordinal);
            Dictionary<string, ParameterValue>? sliceParameters = null;
            ModelReference? sliceBase = null;
            List<ConfigSlice>? configSlices = null;
            string? dtype = null, outDtype = null, name = null;
            TokenizerSettings? tokenizer = null;
            YamlNode? tokenizerNode = null;
            string? chatTemplate = null;
            var decorators = new List<DecoratorConfig>();
            long? seed = null;

            foreach (var (keyNode, value) in map.Children)
            {
                var key = KeyOf(keyNode);
                if (key is null)
                {
                    continue;
                }
                switch (key)
                {
                    case "merge_method":
                        method = String(value, key)?.Trim().ToLowerInvariant();
                        break;
                    case "base_model":
                        baseModel = Model(value);
                        break;
                    case "models":
                        models = Models(value);
                        break;
                    case "slices":
                        (sliceModels, layerRange, sliceParameters, sliceBase, configSlices) = Slices(value);
                        break;
                    case "parameters":
                        Parameters(value, parameters);
                        break;
                    case "dtype":
                        dtype = Dtype(value, key);
                        break;
                    case "out_dtype":
                        outDtype = Dtype(value, key);
                        break;
                    case "tokenizer_source":
                        if (tokenizerNode is not null)
                        {
                            Problem(value, "give either 'tokenizer_source' or 'tokenizer', not both");
                        }
                        tokenizerNode = value;
                        tokenizer = Tokenizer(value, "tokenizer_source") is { } source ? new TokenizerSettings(source, new Dictionary<string, TokenEmbedding>(), null) : null;
                        break;
                    case "tokenizer":
                        if (tokenizerNode is not null)
                        {
                            Problem(value, "give either 'tokenizer_source' or 'tokenizer', not both");
                        }
                        tokenizerNode = value;
                        tokenizer = TokenizerMapping(value);
                        break;
                    case "chat_template":
                        chatTemplate = String(value, key);
                        break;
                    case "decorators":
                        Decorators(value, decorators);
                        break;
                    case "seed":
                        seed = Integer(value, key);
                        break;
                    case "name":
                        name = String(value, key);
                        break;
                    default:
                        Unsupported(keyNode, key);
                        break;
                }
            }

            if (method is null)
            {
                Problem(map, "missing 'merge_method'");
            }
            if (models is not null && sliceModels is not null)
            {
                Problem(map, "give either 'models' or 'slices', not both");
            }
            var inputs = models ?? sliceModels;
            if (inputs is null || inputs.Count == 0)
            {
                Problem(map, "missing 'models' (the models to merge)");
            }
            if (sliceBase is not null)
            {
                if (baseModel is not null && !baseModel.SameModelAs(sliceBase))
                {
                    Problem(map, $"the slice's base_model '{sliceBase}' differs from base_model '{baseModel}'");
                }
                baseModel ??= sliceBase;
            }
            if (sliceParameters is not null)
            {
                foreach (var (key, value) in sliceParameters)
                {
                    parameters[key] = value; // a slice's parameters take precedence over the top-level ones, as in mergekit
                }
            }
            if (tokenizer is not null && inputs is not null)
            {
                CheckTokenizerModels(tokenizerNode!, tokenizer, baseModel, inputs);
            }
            if (Problems.Count > 0)
            {
                return null;
            }
            return new MergeConfig
            {
                MergeMethod = method!,
                BaseModel = baseModel,
                Models = inputs!,
                Parameters = parameters,
                Dtype = dtype,
                OutDtype = outDtype,
                Tokenizer = tokenizer,
                ChatTemplate = chatTemplate,
                Decorators = decorators,
                Seed = seed,
                Name = name,
                LayerRange = layerRange,
                Slices = configSlices,
                SourcePath = sourcePath,
                BaseDirectory = directory,
            };
        }

        private List<InputModel> Models(YamlNode node)
        {
            var result = new List<InputModel>();
            if (node is not YamlSequenceNode list)
            {
                Problem(node, "'models' must be a list of {model, parameters}");
                return result;
            }
            foreach (var item in list.Children)
            {
                var model = InputModelEntry(item, allowCalibration: true, out _);
                if (model is not null)
                {
                    result.Add(model);
                }
            }
            return result;
        }

        private InputModel? InputModelEntry(YamlNode item, bool allowCalibration, out LayerRange? range)
        {
            range = null;
            if (item is not YamlMappingNode entry)
            {
                Problem(item, "a model entry must be a mapping with 'model' (and optionally 'parameters')");
                return null;
            }
            ModelReference? reference = null;
            var parameters = new Dictionary<string, ParameterValue>(StringComparer.Ordinal);
            CalibrationSource? calibration = null;
            var sawRange = false;
            foreach (var (keyNode, value) in entry.Children)
            {
                var key = KeyOf(keyNode);
                switch (key)
                {
                    case null:
                        break;
                    case "model":
                        reference = Model(value);
                        break;
                    case "parameters":
                        Parameters(value, parameters);
                        break;
                    case "calibration":
                        calibration = Calibration(value);
                        break;
                    case "layer_range" when !allowCalibration:
                        sawRange = true;
                        range = Range(value);
                        break;
                    default:
                        Unsupported(keyNode, key);
                        break;
                }
            }
            if (reference is null)
            {
                Problem(entry, "model entry without 'model'");
                return null;
            }
            if (!allowCalibration && !sawRange)
            {
                Problem(entry, $"slice source '{reference}' has no 'layer_range'");
            }
            return new InputModel(reference, parameters, calibration, Line(entry));
        }

        private (List<InputModel>?, LayerRange?, Dictionary<string, ParameterValue>?, ModelReference?, List<ConfigSlice>?) Slices(YamlNode node)
        {
            if (node is not YamlSequenceNode slices || slices.Children.Count == 0)
            {
                Problem(node, "'slices' must be a list of {sources: [...]}");
                return (null, null, null, null, null);
            }
            var parsed = new List<(ConfigSlice Slice, ModelReference? Base)>();
            foreach (var item in slices.Children)
            {
                if (Slice(item) is { } slice)
                {
                    parsed.Add(slice);
                }
            }
            if (parsed.Count != slices.Children.Count)
            {
                return (null, null, null, null, null);
            }
            if (parsed.Count == 1)
            {
                // One slice is the models syntax with a layer range: every source must cover the same layers.
                var (only, sliceBase) = parsed[0];
                var range = only.Sources[0].Range;
                foreach (var source in only.Sources.Where(x => x.Range != range))
                {
                    Problem(node, $"slice sources cover different layers ([{range.Start}, {range.End}] and [{source.Range.Start}, {source.Range.End}]); one slice must take the same layers from every source (several slices make a frankenmerge)");
                }
                return ([.. only.Sources.Select(x => x.Model)], range, new Dictionary<string, ParameterValue>(only.Parameters, StringComparer.Ordinal), sliceBase, null);
            }
            foreach (var (slice, sliceBase) in parsed.Where(p => p.Base is not null))
            {
                Problem(slices.Children[parsed.FindIndex(p => p.Slice == slice)], $"a slice's base_model ('{sliceBase}') is not supported in a config of several slices");
            }
            // Every model once, with the calibration set any of its sources gives (the decorators score each model once).
            var models = new List<InputModel>();
            var sources = parsed.SelectMany(p => p.Slice.Sources).Select(x => x.Model).ToList();
            foreach (var source in sources.Where(source => !models.Any(m => m.Model.SameModelAs(source.Model))))
            {
                models.Add(source with { Calibration = sources.FirstOrDefault(x => x.Model.SameModelAs(source.Model) && x.Calibration is not null)?.Calibration });
            }
            return (models, null, null, null, [.. parsed.Select(p => p.Slice)]);
        }

        /// <summary>One entry of <c>slices</c>: its sources (each with a layer range, all of one length), parameters and base model.</summary>
        private (ConfigSlice Slice, ModelReference? Base)? Slice(YamlNode node)
        {
            if (node is not YamlMappingNode slice)
            {
                Problem(node, "a slice must be a mapping with 'sources'");
                return null;
            }
            var sources = new List<SliceSource>();
            var parameters = new Dictionary<string, ParameterValue>(StringComparer.Ordinal);
            ModelReference? baseModel = null;
            var problems = Problems.Count;
            foreach (var (keyNode, value) in slice.Children)
            {
                var key = KeyOf(keyNode);
                switch (key)
                {
                    case null:
                        break;
                    case "sources" when value is YamlSequenceNode list:
                        foreach (var source in list.Children)
                        {
                            var model = InputModelEntry(source, allowCalibration: false, out var sourceRange);
                            if (model is null || sourceRange is null)
                            {
                                continue;
                            }
                            if (sources.Count > 0 && sourceRange.End - sourceRange.Start != sources[0].Range.End - sources[0].Range.Start)
                            {
                                Problem(source, $"slice sources take different numbers of layers ([{sources[0].Range.Start}, {sources[0].Range.End}] and [{sourceRange.Start}, {sourceRange.End}]); every source of a slice gives the same number");
                            }
                            sources.Add(new SliceSource(model, sourceRange));
                        }
                        break;
                    case "sources":
                        Problem(value, "'sources' must be a list of {model, layer_range}");
                        break;
                    case "parameters":
                        Parameters(value, parameters);
                        break;
                    case "base_model":
                        baseModel = Model(value);
                        break;
                    default:
                        Unsupported(keyNode, key);
                        break;
                }
            }
            if (sources.Count == 0)
            {
                Problem(slice, "the slice has no 'sources'");
            }
            return Problems.Count > problems ? null : (new ConfigSlice(sources, parameters, Line(slice)), baseModel);
        }

        private LayerRange? Range(YamlNode node)
        {
            if (node is YamlSequenceNode { Children.Count: 2 } pair
                && Scalar(pair.Children[0]) is long start && Scalar(pair.Children[1]) is long end && start >= 0 && end > start)
            {
                return new LayerRange((int)start, (int)end);
            }
            Problem(node, "'layer_range' must be [start, end] with 0 <= start < end");
            return null;
        }

        private void Parameters(YamlNode node, Dictionary<string, ParameterValue> into)
        {
            if (node is not YamlMappingNode map)
            {
                Problem(node, "'parameters' must be a mapping of parameter names to values");
                return;
            }
            foreach (var (keyNode, value) in map.Children)
            {
                var key = KeyOf(keyNode);
                if (key is null)
                {
                    continue;
                }
                var parsed = Value(value, key);
                if (parsed is not null)
                {
                    into[key] = parsed;
                }
            }
        }

        private ParameterValue? Value(YamlNode node, string name)
        {
            switch (node)
            {
                case YamlScalarNode scalar:
                    var value = Scalar(scalar);
                    if (value is null)
                    {
                        Problem(node, $"parameter '{name}' has no value");
                        return null;
                    }
                    return new ScalarParameter(value, Line(node));
                case YamlSequenceNode { Children.Count: 0 }:
                    Problem(node, $"parameter '{name}' is an empty list");
                    return null;
                case YamlSequenceNode list when list.Children.All(c => c is YamlScalarNode):
                    return Gradient(list, name);
                case YamlSequenceNode list when list.Children.All(c => c is YamlMappingNode):
                    var entries = new List<FilterEntry>();
                    foreach (var child in list.Children)
                    {
                        var entry = Filter((YamlMappingNode)child, name);
                        if (entry is not null)
                        {
                            entries.Add(entry);
                        }
                    }
                    return new FilteredParameter(entries, Line(node));
                default:
                    Problem(node, $"parameter '{name}' must be a value, a list of values (interpolated over depth), or a list of {{filter, value}}");
                    return null;
            }
        }

        private GradientParameter? Gradient(YamlSequenceNode list, string name)
        {
            var values = new List<object>();
            foreach (var child in list.Children)
            {
                var value = Scalar((YamlScalarNode)child);
                if (value is null)
                {
                    Problem(child, $"parameter '{name}' has an empty list item");
                    return null;
                }
                values.Add(value);
            }
            var numeric = values.Count(v => v is double or long);
            if (numeric != 0 && numeric != values.Count)
            {
                Problem(list, $"parameter '{name}' mixes numbers and other values in one list");
                return null;
            }
            return new GradientParameter(values, Line(list));
        }

        private FilterEntry? Filter(YamlMappingNode map, string name)
        {
            string? filter = null;
            ParameterValue? value = null;
            foreach (var (keyNode, child) in map.Children)
            {
                var key = KeyOf(keyNode);
                switch (key)
                {
                    case null:
                        break;
                    case "filter":
                        filter = String(child, $"{name}.filter");
                        break;
                    case "value" when child is not YamlScalarNode && !(child is YamlSequenceNode seq && seq.Children.All(c => c is YamlScalarNode)):
                        Problem(child, $"parameter '{name}': a filter's value must be a value or a list of values");
                        break;
                    case "value":
                        value = Value(child, name);
                        break;
                    default:
                        Unsupported(keyNode, key);
                        break;
                }
            }
            if (value is null)
            {
                Problem(map, $"parameter '{name}': filter entry without 'value'");
                return null;
            }
            return new FilterEntry(filter, value, Line(map));
        }

        private CalibrationSource? Calibration(YamlNode node)
        {
            if (node is YamlScalarNode)
            {
                var path = String(node, "calibration");
                return path is null ? null : new CalibrationSource(FullPath(path), null, null);
            }
            if (node is not YamlMappingNode map)
            {
                Problem(node, "'calibration' must be a path or a mapping {path, samples, max_length}");
                return null;
            }
            string? file = null;
            int? samples = null, maxLength = null;
            foreach (var (keyNode, value) in map.Children)
            {
                var key = KeyOf(keyNode);
                switch (key)
                {
                    case null:
                        break;
                    case "path":
                        file = String(value, "calibration.path");
                        break;
                    case "samples":
                        samples = Positive(value, "calibration.samples");
                        break;
                    case "max_length":
                        maxLength = Positive(value, "calibration.max_length");
                        break;
                    default:
                        Unsupported(keyNode, key);
                        break;
                }
            }
            if (file is null)
            {
                Problem(map, "'calibration' needs a 'path'");
                return null;
            }
            return new CalibrationSource(FullPath(file), samples, maxLength);
        }

        private void Decorators(YamlNode node, List<DecoratorConfig> into)
        {
            if (node is not YamlSequenceNode list)
            {
                Problem(node, "'decorators' must be a list of {name, parameters}");
                return;
            }
            foreach (var item in list.Children)
            {
                if (item is YamlScalarNode)
                {
                    var plain = String(item, "decorators[]");
                    if (plain is not null)
                    {
                        into.Add(new DecoratorConfig(plain, new Dictionary<string, ParameterValue>(), Line(item)));
                    }
                    continue;
                }
                if (item is not YamlMappingNode map)
                {
                    Problem(item, "a decorator must be a name or a mapping {name, parameters}");
                    continue;
                }
                string? name = null;
                var parameters = new Dictionary<string, ParameterValue>(StringComparer.Ordinal);
                foreach (var (keyNode, value) in map.Children)
                {
                    var key = KeyOf(keyNode);
                    switch (key)
                    {
                        case null:
                            break;
                        case "name":
                            name = String(value, "decorator name");
                            break;
                        case "parameters":
                            Parameters(value, parameters);
                            break;
                        default:
                            Unsupported(keyNode, key);
                            break;
                    }
                }
                if (name is null)
                {
                    Problem(map, "decorator entry without 'name'");
                    continue;
                }
                into.Add(new DecoratorConfig(name, parameters, Line(map)));
            }
        }

        private TokenizerSource? Tokenizer(YamlNode node, string key)
        {
            var text = String(node, key);
            switch (text)
            {
                case null:
                    return null;
                case "base":
                    return new TokenizerSource(TokenizerSourceKind.Base, null);
                case "union":
                    return new TokenizerSource(TokenizerSourceKind.Union, null);
                default:
                    var model = Model(node, text.StartsWith("model:", StringComparison.Ordinal) ? text["model:".Length..] : text);
                    return model is null ? null : new TokenizerSource(TokenizerSourceKind.Model, model);
            }
        }

        /// <summary>mergekit's <c>tokenizer</c> block: <c>source</c> (default <c>union</c>, as mergekit's), <c>tokens</c>, <c>pad_to_multiple_of</c>.</summary>
        private TokenizerSettings? TokenizerMapping(YamlNode node)
        {
            if (node is not YamlMappingNode map)
            {
                Problem(node, "'tokenizer' must be a mapping {source, tokens, pad_to_multiple_of}");
                return null;
            }
            var source = new TokenizerSource(TokenizerSourceKind.Union, null);
            var tokens = new Dictionary<string, TokenEmbedding>(StringComparer.Ordinal);
            int? pad = null;
            foreach (var (keyNode, value) in map.Children)
            {
                var key = KeyOf(keyNode);
                switch (key)
                {
                    case null:
                        break;
                    case "source":
                        source = Tokenizer(value, "tokenizer.source") ?? source;
                        break;
                    case "pad_to_multiple_of":
                        pad = Positive(value, "tokenizer.pad_to_multiple_of");
                        break;
                    case "tokens":
                        Tokens(value, tokens);
                        break;
                    default:
                        Unsupported(keyNode, key);
                        break;
                }
            }
            return new TokenizerSettings(source, tokens, pad);
        }

        /// <summary><c>tokens: {"&lt;token&gt;": {source: ..., force: bool}}</c>.</summary>
        private void Tokens(YamlNode node, Dictionary<string, TokenEmbedding> tokens)
        {
            if (node is not YamlMappingNode map)
            {
                Problem(node, "'tokenizer.tokens' must be a mapping of token text to {source, force}");
                return;
            }
            foreach (var (keyNode, value) in map.Children)
            {
                if (keyNode is not YamlScalarNode { Value: { Length: > 0 } token })
                {
                    Problem(keyNode, "'tokenizer.tokens' keys must be the tokens' text");
                    continue;
                }
                TokenEmbeddingSource? source = null;
                var force = false;
                if (value is YamlScalarNode { Value: null or "" or "~" or "null" })
                {
                    tokens[token] = new TokenEmbedding(null, false);
                    continue;
                }
                if (value is not YamlMappingNode entry)
                {
                    Problem(value, $"token '{token}': expected a mapping {{source, force}}");
                    continue;
                }
                foreach (var (k, v) in entry.Children)
                {
                    switch (KeyOf(k))
                    {
                        case null:
                            break;
                        case "source":
                            source = TokenSource(v, token);
                            break;
                        case "force":
                            if (Scalar(v) is bool b)
                            {
                                force = b;
                            }
                            else
                            {
                                Problem(v, $"token '{token}': 'force' must be true or false");
                            }
                            break;
                        case var other:
                            Problem(k, $"token '{token}': unknown key '{other}' (use source, force)");
                            break;
                    }
                }
                tokens[token] = new TokenEmbedding(source, force);
            }
        }

        /// <summary>A token's embedding source: a model name, <c>{kind: zero}</c>, or <c>{kind: model_token, model, token | token_id}</c>.</summary>
        private TokenEmbeddingSource? TokenSource(YamlNode node, string token)
        {
            if (node is YamlScalarNode)
            {
                var model = Model(node, String(node, $"tokens.{token}.source"));
                return model is null ? null : new TokenEmbeddingSource(TokenEmbeddingKind.Model, model);
            }
            if (node is not YamlMappingNode map)
            {
                Problem(node, $"token '{token}': 'source' must be a model or a mapping {{kind: zero}} / {{kind: model_token, model, token}}");
                return null;
            }
            string? kind = null;
            ModelReference? model2 = null;
            string? text = null;
            long? id = null;
            foreach (var (k, v) in map.Children)
            {
                switch (KeyOf(k))
                {
                    case null:
                        break;
                    case "kind":
                        kind = String(v, "kind");
                        break;
                    case "model":
                        model2 = Model(v);
                        break;
                    case "token":
                        text = v is YamlScalarNode { Value: { } t } ? t : null;
                        if (text is null)
                        {
                            Problem(v, $"token '{token}': 'source.token' must be a token's text");
                        }
                        break;
                    case "token_id":
                        id = Integer(v, "token_id");
                        break;
                    case var other:
                        Problem(k, $"token '{token}': unknown key '{other}' in source (use kind, model, token, token_id)");
                        break;
                }
            }
            switch (kind)
            {
                case "zero":
                    return new TokenEmbeddingSource(TokenEmbeddingKind.Zero, null);
                case "model_token":
                    if (model2 is null)
                    {
                        Problem(node, $"token '{token}': a model_token source needs 'model'");
                        return null;
                    }
                    if ((text is null) == (id is null))
                    {
                        Problem(node, $"token '{token}': a model_token source needs exactly one of 'token' and 'token_id'");
                        return null;
                    }
                    return new TokenEmbeddingSource(TokenEmbeddingKind.ModelToken, model2, text, id);
                default:
                    Problem(node, $"token '{token}': unknown source kind '{kind}' (use zero or model_token, or name a model)");
                    return null;
            }
        }

        /// <summary>
        /// Every model a <c>tokens</c> entry names must be one the merge reads (its embedding rows are read with the others);
        /// the tokenizer source itself may be any model (only its tokenizer files are read, as mergekit does).
        /// </summary>
        private void CheckTokenizerModels(YamlNode node, TokenizerSettings settings, ModelReference? baseModel, List<InputModel> inputs)
        {
            bool Known(ModelReference m) => (baseModel is not null && baseModel.SameModelAs(m)) || inputs.Any(i => i.Model.SameModelAs(m));
            var names = string.Join(", ", inputs.Select(i => i.Model.Text).Prepend(baseModel?.Text).OfType<string>().Distinct());
            foreach (var (token, entry) in settings.Tokens)
            {
                if (entry.Source?.Model is { } m && !Known(m))
                {
                    Problem(node, $"token '{token}': its source model '{m.Text}' is not one of the merge's models ({names})");
                }
            }
        }

        private string? Dtype(YamlNode node, string key)
        {
            var text = String(node, key);
            switch (text?.Trim().ToLowerInvariant())
            {
                case null:
                    return null;
                case "float32" or "fp32" or "f32" or "float":
                    return "float32";
                case "float16" or "fp16" or "f16" or "half":
                    return "float16";
                case "bfloat16" or "bf16":
                    return "bfloat16";
                default:
                    Problem(node, $"'{key}' is '{text}'; supported: float32, float16, bfloat16");
                    return null;
            }
        }

        private ModelReference? Model(YamlNode node, string? text = null)
        {
            text ??= String(node, "model");
            if (text is null)
            {
                return null;
            }
            try
            {
                return ModelReference.Parse(text, directory);
            }
            catch (FormatException e)
            {
                Problem(node, e.Message);
                return null;
            }
        }

        private string FullPath(string path) => Path.GetFullPath(Path.Combine(directory, path));

        private int? Positive(YamlNode node, string key)
        {
            var value = Integer(node, key);
            if (value is null)
            {
                return null;
            }
            if (value <= 0 || value > int.MaxValue)
            {
                Problem(node, $"'{key}' must be a positive integer, got {value}");
                return null;
            }
            return (int)value;
        }

        private long? Integer(YamlNode node, string key)
        {
            if (node is YamlScalarNode scalar && Scalar(scalar) is long value)
            {
                return value;
            }
            Problem(node, $"'{key}' must be an integer");
            return null;
        }

        private string? String(YamlNode node, string key)
        {
            if (node is YamlScalarNode { Value: { Length: > 0 } value })
            {
                return value;
            }
            Problem(node, $"'{key}' must be a non-empty text value");
            return null;
        }

        private string? KeyOf(YamlNode keyNode)
        {
            if (keyNode is YamlScalarNode { Value: { Length: > 0 } key })
            {
                return key;
            }
            Problem(keyNode, "keys must be plain names");
            return null;
        }

        private void Unsupported(YamlNode keyNode, string key) =>
            Problem(keyNode, KnownUnsupported.TryGetValue(key, out var why)
                ? $"unsupported key '{key}' ({why})"
                : $"unsupported key '{key}'");

        private void Problem(YamlNode node, string message) => Problems.Add($"line {Line(node)}: {message}");
    }

    /// <summary>
    /// A YAML scalar as a value: plain scalars become null, booleans (true/false/yes/no/on/off), integers
    /// (<see cref="long"/>) or floats (<see cref="double"/>); quoted scalars stay text.
    /// </summary>
    internal static object? Scalar(YamlNode node)
    {
        if (node is not YamlScalarNode scalar)
        {
            return null;
        }
        var text = scalar.Value;
        if (scalar.Style is not ScalarStyle.Plain and not ScalarStyle.Any)
        {
            return text ?? string.Empty;
        }
        if (text is null or "" or "~" or "null" or "Null" or "NULL")
        {
            return null;
        }
        switch (text.ToLowerInvariant())
        {
            case "true" or "yes" or "on":
                return true;
            case "false" or "no" or "off":
                return false;
            default:
                break;
        }
        if (long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var integer))
        {
            return integer;
        }
        if (double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var real) && double.IsFinite(real))
        {
            return real;
        }
        return text;
    }
}
