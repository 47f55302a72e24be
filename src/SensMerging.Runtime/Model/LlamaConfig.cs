using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace SensMerging.Runtime.Model;

/// <summary>
/// The architecture settings of a Hugging Face decoder-only model (<c>config.json</c>) of one of the
/// <see cref="SupportedModelTypes"/>: Llama (1-3.x), Mistral, Qwen2/2.5, Qwen3, Gemma 2 and Phi-3. Each is read from
/// its own published config keys and defaults; a model type, architecture or setting the runtime does not implement
/// exactly is refused by name (see docs/architectures.md). <see cref="Save"/> writes a config.json that
/// <c>transformers</c> can read back.
/// </summary>
public sealed record LlamaConfig
{
    /// <summary>The <c>model_type</c> values the runtime loads, with their <c>architectures</c> class.</summary>
    public static IReadOnlyDictionary<string, string> SupportedModelTypes { get; } = new Dictionary<string, string>(StringComparer.Ordinal)
    {
        ["llama"] = "LlamaForCausalLM",
        ["mistral"] = "MistralForCausalLM",
        ["qwen2"] = "Qwen2ForCausalLM",
        ["qwen3"] = "Qwen3ForCausalLM",
        ["gemma2"] = "Gemma2ForCausalLM",
        ["phi3"] = "Phi3ForCausalLM",
    };

    /// <summary>One of <see cref="SupportedModelTypes"/>.</summary>
    public string ModelType { get; init; } = "llama";

    public required int HiddenSize { get; init; }

    public required int IntermediateSize { get; init; }

    public required int NumHiddenLayers { get; init; }

    public required int NumAttentionHeads { get; init; }

    /// <summary>Key/value heads (grouped-query attention); equals <see cref="NumAttentionHeads"/> without GQA.</summary>
    public required int NumKeyValueHeads { get; init; }

    /// <summary>Per-head size; <c>hidden_size / num_attention_heads</c> when config.json has no head_dim.</summary>
    public int? HeadDimOverride { get; init; }

    public double RmsNormEps { get; init; } = 1e-6;

    public double RopeTheta { get; init; } = 10000.0;

    public int MaxPositionEmbeddings { get; init; } = 2048;

    public required int VocabSize { get; init; }

    public bool TieWordEmbeddings { get; init; }

    /// <summary>q/k/v/o projections carry a bias (config <c>attention_bias</c>).</summary>
    public bool AttentionBias { get; init; }

    /// <summary>
    /// q/k/v projections carry a bias and o_proj does not (Qwen2's fixed layout); independent of <see cref="AttentionBias"/>.
    /// </summary>
    public bool QkvBias { get; init; }

    /// <summary>The sliding attention window of the layers that use one (see <see cref="LayerTypes"/>), or null.</summary>
    public int? SlidingWindow { get; init; }

    /// <summary>
    /// Per layer <c>full_attention</c> or <c>sliding_attention</c> (Qwen2/3, Gemma 2), or null when every layer uses
    /// <see cref="SlidingWindow"/> (Mistral, Phi-3; full attention when that is null).
    /// </summary>
    public IReadOnlyList<string>? LayerTypes { get; init; }

    /// <summary>The feed-forward activation: <c>silu</c> (SwiGLU) or <c>gelu_pytorch_tanh</c> (Gemma's GeGLU).</summary>
    public string HiddenAct { get; init; } = "silu";

    /// <summary>Rotary-embedding frequency scaling (<c>rope_scaling</c>), or null for plain rotary embeddings.</summary>
    public RopeScaling? RopeScaling { get; init; }

    /// <summary>Qwen3: an RMSNorm over each query and key head (<c>q_norm</c>, <c>k_norm</c>) before the rotary embedding.</summary>
    public bool QkNorm { get; init; }

    /// <summary>Phi-3: one fused <c>qkv_proj</c> and one fused <c>gate_up_proj</c> per layer.</summary>
    public bool FusedProjections { get; init; }

    /// <summary>Gemma: RMSNorms scale by <c>1 + weight</c> (computed in float32), embeddings by <c>sqrt(hidden_size)</c>.</summary>
    public bool GemmaNorms { get; init; }

    /// <summary>Gemma 2: extra <c>post_attention_layernorm</c>, <c>pre_feedforward_layernorm</c>, <c>post_feedforward_layernorm</c>.</summary>
    public bool SandwichNorms { get; init; }

    /// <summary>Gemma 2: attention scores are scaled by <c>query_pre_attn_scalar^-0.5</c> instead of <c>head_dim^-0.5</c>.</summary>
    public double? QueryPreAttnScalar { get; init; }

    /// <summary>Gemma 2: attention scores become <c>cap * tanh(scores / cap)</c> before the mask.</summary>
    public double? AttnLogitSoftcapping { get; init; }

    /// <summary>Gemma 2: logits become <c>cap * tanh(logits / cap)</c>.</summary>
    public double? FinalLogitSoftcapping { get; init; }

    public int? BosTokenId { get; init; }

    public int? EosTokenId { get; init; }

    public int? PadTokenId { get; init; }

    public int HeadDim => HeadDimOverride ?? HiddenSize / NumAttentionHeads;

    /// <summary>The attention window of layer <paramref name="layer"/>, or null for full causal attention.</summary>
    public int? WindowOf(int layer) =>
        LayerTypes is null || LayerTypes[layer] == SlidingAttention ? SlidingWindow : null;

    private const string SlidingAttention = "sliding_attention";
    private const string FullAttention = "full_attention";

    /// <summary>Throws <see cref="InvalidDataException"/> naming the first inconsistent setting.</summary>
    public void Validate()
    {
        if (!SupportedModelTypes.ContainsKey(ModelType))
        {
            throw new InvalidDataException(UnsupportedModelType(ModelType));
        }
        Positive(HiddenSize, "hidden_size");
        Positive(IntermediateSize, "intermediate_size");
        Positive(NumHiddenLayers, "num_hidden_layers");
        Positive(NumAttentionHeads, "num_attention_heads");
        Positive(NumKeyValueHeads, "num_key_value_heads");
        Positive(VocabSize, "vocab_size");
        Positive(MaxPositionEmbeddings, "max_position_embeddings");
        if (NumAttentionHeads % NumKeyValueHeads != 0)
        {
            throw new InvalidDataException($"config.json num_attention_heads ({NumAttentionHeads}) is not a multiple of num_key_value_heads ({NumKeyValueHeads}).");
        }
        if (HeadDimOverride is null && HiddenSize % NumAttentionHeads != 0)
        {
            throw new InvalidDataException($"config.json hidden_size ({HiddenSize}) is not a multiple of num_attention_heads ({NumAttentionHeads}) and no head_dim is given.");
        }
        if (HeadDim <= 0 || HeadDim % 2 != 0)
        {
            throw new InvalidDataException($"config.json head_dim ({HeadDim}) must be a positive even number for rotary embeddings.");
        }
        if (RmsNormEps <= 0 || RopeTheta <= 0)
        {
            throw new InvalidDataException("config.json rms_norm_eps and rope_theta must be positive.");
        }
        if (SlidingWindow is <= 0)
        {
            throw new InvalidDataException($"config.json sliding_window ({SlidingWindow}) must be positive.");
        }
        if (HiddenAct is not ("silu" or "gelu_pytorch_tanh"))
        {
            throw new InvalidDataException($"hidden activation '{HiddenAct}' is not supported (silu or gelu_pytorch_tanh).");
        }
        if (LayerTypes is { } types)
        {
            if (types.Count != NumHiddenLayers)
            {
                throw new InvalidDataException($"config.json layer_types has {types.Count} entries for {NumHiddenLayers} layers.");
            }
            if (types.FirstOrDefault(t => t is not (SlidingAttention or FullAttention)) is { } unknown)
            {
                throw new InvalidDataException($"config.json layer_types entry '{unknown}' is not supported (full_attention or sliding_attention).");
            }
            if (SlidingWindow is null && types.Contains(SlidingAttention))
            {
                throw new InvalidDataException("config.json layer_types has sliding_attention layers but no sliding_window.");
            }
        }
        foreach (var (name, value) in new[] { ("query_pre_attn_scalar", QueryPreAttnScalar), ("attn_logit_softcapping", AttnLogitSoftcapping), ("final_logit_softcapping", FinalLogitSoftcapping) })
        {
            if (value is { } v && !(v > 0 && double.IsFinite(v)))
            {
                throw new InvalidDataException($"config.json {name} ({v}) must be a positive number.");
            }
        }
        RopeScaling?.Validate();
    }

    /// <summary>Reads and validates <c>config.json</c>.</summary>
    public static LlamaConfig Load(string configPath)
    {
        ArgumentNullException.ThrowIfNull(configPath);
        if (!File.Exists(configPath))
        {
            throw new FileNotFoundException($"Model config not found: {configPath}", configPath);
        }
        JsonNode? root;
        try
        {
            root = JsonNode.Parse(File.ReadAllText(configPath));
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"{configPath} is not valid JSON: {ex.Message}", ex);
        }
        if (root is not JsonObject obj)
        {
            throw new InvalidDataException($"{configPath} is not a JSON object.");
        }
        try
        {
            return Parse(obj);
        }
        catch (InvalidDataException ex)
        {
            throw new InvalidDataException($"{configPath}: {ex.Message}", ex);
        }
    }

    /// <summary>
    /// Parses and validates a config.json object, with the defaults of each model type's Hugging Face configuration
    /// class for the keys it omits. Settings the runtime does not implement are refused by name.
    /// </summary>
    public static LlamaConfig Parse(JsonObject obj)
    {
        ArgumentNullException.ThrowIfNull(obj);
        var modelType = obj["model_type"]?.GetValue<string>()
            ?? throw new InvalidDataException("config.json has no model_type.");
        if (!SupportedModelTypes.TryGetValue(modelType, out var architecture))
        {
            throw new InvalidDataException(UnsupportedModelType(modelType));
        }
        if (obj["architectures"] is JsonArray architectures)
        {
            foreach (var name in architectures.Select(a => a?.ToString()))
            {
                if (name != architecture)
                {
                    throw new InvalidDataException($"config.json architecture '{name}' is not supported for model_type '{modelType}': the runtime runs {architecture}.");
                }
            }
        }
        var gemma = modelType == "gemma2";
        var act = gemma
            ? obj["hidden_activation"]?.GetValue<string>() ?? "gelu_pytorch_tanh"
            : obj["hidden_act"]?.GetValue<string>() ?? "silu";
        if (act == "swish")
        {
            act = "silu";
        }
        if (act != (gemma ? "gelu_pytorch_tanh" : "silu"))
        {
            throw new InvalidDataException($"config.json {(gemma ? "hidden_activation" : "hidden_act")} '{act}' is not supported for {modelType} (it uses {(gemma ? "gelu_pytorch_tanh" : "silu")}).");
        }
        if (obj["mlp_bias"] is JsonValue mlpBias && mlpBias.GetValue<bool>())
        {
            throw new InvalidDataException("config.json mlp_bias=true is not supported.");
        }
        if (OptionalDouble(obj, "partial_rotary_factor") is { } partial && partial != 1.0)
        {
            throw new InvalidDataException($"config.json partial_rotary_factor {partial} is not supported; only full rotary embeddings (1.0) are.");
        }
        var heads = RequiredInt(obj, "num_attention_heads");
        var layers = RequiredInt(obj, "num_hidden_layers");
        var window = OptionalInt(obj, "sliding_window");
        IReadOnlyList<string>? layerTypes = null;
        switch (modelType)
        {
            case "qwen2" or "qwen3":
                // Qwen: the window applies only with use_sliding_window, to the layers from max_window_layers on.
                window = OptionalBool(obj, "use_sliding_window") == true ? window ?? 4096 : null;
                layerTypes = LayerTypesOf(obj, layers, i => window is not null && i >= (OptionalInt(obj, "max_window_layers") ?? 28));
                break;
            case "gemma2":
                // Gemma 2: even layers (0, 2, ...) slide, odd layers attend fully.
                window ??= obj.ContainsKey("sliding_window") ? null : 4096;
                layerTypes = LayerTypesOf(obj, layers, i => i % 2 == 0);
                break;
        }
        var config = new LlamaConfig
        {
            ModelType = modelType,
            HiddenSize = RequiredInt(obj, "hidden_size"),
            IntermediateSize = RequiredInt(obj, "intermediate_size"),
            NumHiddenLayers = layers,
            NumAttentionHeads = heads,
            NumKeyValueHeads = OptionalInt(obj, "num_key_value_heads") ?? heads,
            HeadDimOverride = OptionalInt(obj, "head_dim") ?? modelType switch { "qwen3" => 128, "gemma2" => 256, _ => null },
            RmsNormEps = OptionalDouble(obj, "rms_norm_eps") ?? 1e-6,
            RopeTheta = OptionalDouble(obj, "rope_theta") ?? 10000.0,
            MaxPositionEmbeddings = OptionalInt(obj, "max_position_embeddings") ?? 2048,
            VocabSize = RequiredInt(obj, "vocab_size"),
            TieWordEmbeddings = OptionalBool(obj, "tie_word_embeddings") ?? gemma,
            AttentionBias = modelType is not ("qwen2" or "phi3") && (OptionalBool(obj, "attention_bias") ?? false),
            QkvBias = modelType == "qwen2",
            SlidingWindow = window,
            LayerTypes = layerTypes,
            HiddenAct = act,
            RopeScaling = RopeScaling.Parse(obj["rope_scaling"], modelType),
            QkNorm = modelType == "qwen3",
            FusedProjections = modelType == "phi3",
            GemmaNorms = gemma,
            SandwichNorms = gemma,
            QueryPreAttnScalar = gemma ? OptionalDouble(obj, "query_pre_attn_scalar") ?? 256 : null,
            AttnLogitSoftcapping = gemma ? (obj.ContainsKey("attn_logit_softcapping") ? OptionalDouble(obj, "attn_logit_softcapping") : 50.0) : null,
            FinalLogitSoftcapping = gemma ? (obj.ContainsKey("final_logit_softcapping") ? OptionalDouble(obj, "final_logit_softcapping") : 30.0) : null,
            BosTokenId = FirstInt(obj["bos_token_id"]),
            EosTokenId = FirstInt(obj["eos_token_id"]),
            PadTokenId = FirstInt(obj["pad_token_id"]),
        };
        config.Validate();
        return config;
    }

    private static string UnsupportedModelType(string modelType) =>
        $"config.json model_type '{modelType}' is not supported: the runtime loads {string.Join(", ", SupportedModelTypes.Keys.Select(k => "'" + k + "'"))} models.";

    /// <summary>config.json <c>layer_types</c> when given, else the model type's default rule.</summary>
    private static IReadOnlyList<string> LayerTypesOf(JsonObject obj, int layers, Func<int, bool> sliding)
    {
        if (obj["layer_types"] is JsonArray given)
        {
            return given.Select(t => t?.ToString() ?? "null").ToArray();
        }
        return Enumerable.Range(0, layers).Select(i => sliding(i) ? SlidingAttention : FullAttention).ToArray();
    }

    /// <summary>The config.json text of this configuration.</summary>
    public string ToJson()
    {
        var obj = new JsonObject
        {
            ["architectures"] = new JsonArray(SupportedModelTypes.TryGetValue(ModelType, out var architecture) ? architecture : ModelType),
            ["model_type"] = ModelType,
            ["hidden_size"] = HiddenSize,
            ["intermediate_size"] = IntermediateSize,
            ["num_hidden_layers"] = NumHiddenLayers,
            ["num_attention_heads"] = NumAttentionHeads,
            ["num_key_value_heads"] = NumKeyValueHeads,
            ["hidden_act"] = "silu",
            ["rms_norm_eps"] = RmsNormEps,
            ["rope_theta"] = RopeTheta,
            ["max_position_embeddings"] = MaxPositionEmbeddings,
            ["vocab_size"] = VocabSize,
            ["tie_word_embeddings"] = TieWordEmbeddings,
            ["attention_bias"] = AttentionBias,
            ["torch_dtype"] = "float32",
        };
        if (HeadDimOverride is { } headDim)
        {
            obj["head_dim"] = headDim;
        }
        if (SlidingWindow is { } window)
        {
            obj["sliding_window"] = window;
        }
        if (RopeScaling is { } scaling)
        {
            obj["rope_scaling"] = scaling.ToJson();
        }
        if (LayerTypes is { } layerTypes)
        {
            obj["layer_types"] = new JsonArray(layerTypes.Select(t => (JsonNode)JsonValue.Create(t)).ToArray());
            if (ModelType is "qwen2" or "qwen3")
            {
                obj["use_sliding_window"] = SlidingWindow is not null;
            }
        }
        if (ModelType == "gemma2")
        {
            obj["hidden_activation"] = HiddenAct;
            obj["hidden_act"] = HiddenAct;
            obj["query_pre_attn_scalar"] = QueryPreAttnScalar;
            obj["attn_logit_softcapping"] = AttnLogitSoftcapping;
            obj["final_logit_softcapping"] = FinalLogitSoftcapping;
            obj["sliding_window"] = SlidingWindow;
        }
        if (BosTokenId is { } bos)
        {
            obj["bos_token_id"] = bos;
        }
        if (EosTokenId is { } eos)
        {
            obj["eos_token_id"] = eos;
        }
        if (PadTokenId is { } pad)
        {
            obj["pad_token_id"] = pad;
        }
        return obj.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    /// <summary>Writes config.json into <paramref name="directory"/>.</summary>
    public void Save(string directory)
    {
        ArgumentNullException.ThrowIfNull(directory);
        Directory.CreateDirectory(directory);
        File.WriteAllText(Path.Combine(directory, "config.json"), ToJson());
    }

    private static void Positive(int value, string name)
    {
        if (value <= 0)
        {
            throw new InvalidDataException($"config.json {name} must be positive, got {value}.");
        }
    }

    private static int RequiredInt(JsonObject obj, string name) =>
        OptionalInt(obj, name) ?? throw new InvalidDataException($"config.json has no {name}.");

    internal static int? OptionalInt(JsonObject obj, string name)
    {
        var node = obj[name];
        if (node is null)
        {
            return null;
        }
        try
        {
            return node.GetValue<int>();
        }
        catch (Exception ex) when (ex is FormatException or InvalidOperationException)
        {
            throw new InvalidDataException($"config.json {name} must be an integer, got {node.ToJsonString()}.", ex);
        }
    }

    private static bool? OptionalBool(JsonObject obj, string name)
    {
        var node = obj[name];
        if (node is null)
        {
            return null;
        }
        try
        {
            return node.GetValue<bool>();
        }
        catch (Exception ex) when (ex is FormatException or InvalidOperationException)
        {
            throw new InvalidDataException($"config.json {name} must be true or false, got {node.ToJsonString()}.", ex);
        }
    }

    internal static double? OptionalDouble(JsonObject obj, string name)
    {
        var node = obj[name];
        if (node is null)
        {
            return null;
        }
        try
        {
            return node.GetValue<double>();
        }
        catch (Exception ex) when (ex is FormatException or InvalidOperationException)
        {
            throw new InvalidDataException($"config.json {name} must be a number, got {node.ToJsonString()}.", ex);
        }
    }

    private static int? FirstInt(JsonNode? node) => node switch
    {
        null => null,
        JsonArray { Count: > 0 } array => array[0]?.GetValue<int>(),
        JsonArray => null,
        _ => int.Parse(node.ToJsonString(), NumberStyles.Integer, CultureInfo.InvariantCulture),
    };
}
