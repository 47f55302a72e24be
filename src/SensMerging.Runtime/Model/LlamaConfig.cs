using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace SensMerging.Runtime.Model;

/// <summary>
/// The architecture settings of a Hugging Face Llama or Mistral model (<c>config.json</c>).
/// Only the fields the runtime uses are kept; <see cref="Save"/> writes a config.json that
/// <c>transformers</c> can read back.
/// </summary>
public sealed record LlamaConfig
{
    /// <summary><c>llama</c> or <c>mistral</c>.</summary>
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

    /// <summary>Mistral's sliding attention window, or null for full causal attention.</summary>
    public int? SlidingWindow { get; init; }

    public int? BosTokenId { get; init; }

    public int? EosTokenId { get; init; }

    public int? PadTokenId { get; init; }

    public int HeadDim => HeadDimOverride ?? HiddenSize / NumAttentionHeads;

    /// <summary>Throws <see cref="InvalidDataException"/> naming the first inconsistent setting.</summary>
    public void Validate()
    {
        if (ModelType is not ("llama" or "mistral"))
        {
            throw new InvalidDataException($"config.json model_type '{ModelType}' is not supported: the runtime loads 'llama' and 'mistral' models.");
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

    /// <summary>Parses and validates a config.json object.</summary>
    public static LlamaConfig Parse(JsonObject obj)
    {
        ArgumentNullException.ThrowIfNull(obj);
        var modelType = obj["model_type"]?.GetValue<string>()
            ?? throw new InvalidDataException("config.json has no model_type.");
        if (modelType is not ("llama" or "mistral"))
        {
            throw new InvalidDataException($"config.json model_type '{modelType}' is not supported: the runtime loads 'llama' and 'mistral' models.");
        }
        var act = obj["hidden_act"]?.GetValue<string>() ?? "silu";
        if (act is not ("silu" or "swish"))
        {
            throw new InvalidDataException($"config.json hidden_act '{act}' is not supported (Llama/Mistral use silu).");
        }
        if (obj["rope_scaling"] is JsonObject scaling)
        {
            var kind = scaling["rope_type"]?.ToString() ?? scaling["type"]?.ToString() ?? "?";
            if (kind != "default")
            {
                throw new InvalidDataException($"config.json rope_scaling type '{kind}' is not supported; only plain rotary embeddings are.");
            }
        }
        if (obj["mlp_bias"] is JsonValue mlpBias && mlpBias.GetValue<bool>())
        {
            throw new InvalidDataException("config.json mlp_bias=true is not supported.");
        }
        var heads = RequiredInt(obj, "num_attention_heads");
        var config = new LlamaConfig
        {
            ModelType = modelType,
            HiddenSize = RequiredInt(obj, "hidden_size"),
            IntermediateSize = RequiredInt(obj, "intermediate_size"),
            NumHiddenLayers = RequiredInt(obj, "num_hidden_layers"),
            NumAttentionHeads = heads,
            NumKeyValueHeads = OptionalInt(obj, "num_key_value_heads") ?? heads,
            HeadDimOverride = OptionalInt(obj, "head_dim"),
            RmsNormEps = OptionalDouble(obj, "rms_norm_eps") ?? 1e-6,
            RopeTheta = OptionalDouble(obj, "rope_theta") ?? 10000.0,
            MaxPositionEmbeddings = OptionalInt(obj, "max_position_embeddings") ?? 2048,
            VocabSize = RequiredInt(obj, "vocab_size"),
            TieWordEmbeddings = obj["tie_word_embeddings"]?.GetValue<bool>() ?? false,
            AttentionBias = obj["attention_bias"]?.GetValue<bool>() ?? false,
            SlidingWindow = OptionalInt(obj, "sliding_window"),
            BosTokenId = FirstInt(obj["bos_token_id"]),
            EosTokenId = FirstInt(obj["eos_token_id"]),
            PadTokenId = FirstInt(obj["pad_token_id"]),
        };
        config.Validate();
        return config;
    }

    /// <summary>The config.json text of this configuration.</summary>
    public string ToJson()
    {
        var obj = new JsonObject
        {
            ["architectures"] = new JsonArray(ModelType == "mistral" ? "MistralForCausalLM" : "LlamaForCausalLM"),
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

    private static int? OptionalInt(JsonObject obj, string name)
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

    private static double? OptionalDouble(JsonObject obj, string name)
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
