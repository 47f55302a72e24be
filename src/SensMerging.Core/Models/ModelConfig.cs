using System.Text.Json;

namespace SensMerging.Core.Models;

/// <summary>The fields of a Hugging Face <c>config.json</c> the host uses, plus the raw JSON.</summary>
public sealed record ModelConfig(
    string? ModelType,
    int? NumHiddenLayers,
    int? HiddenSize,
    int? VocabSize,
    bool? TieWordEmbeddings,
    string? TorchDtype,
    string RawJson)
{
    /// <summary>Parses <c>config.json</c> text; <paramref name="source"/> names the file in errors.</summary>
    public static ModelConfig Parse(string json, string source)
    {
        ArgumentNullException.ThrowIfNull(json);
        try
        {
            using var doc = JsonDocument.Parse(json);
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
            {
                throw new ModelFolderException($"{source}: config is {doc.RootElement.ValueKind}, expected a JSON object");
            }
            var root = doc.RootElement;
            return new ModelConfig(
                Str(root, "model_type"),
                Int(root, "num_hidden_layers", source),
                Int(root, "hidden_size", source),
                Int(root, "vocab_size", source),
                root.TryGetProperty("tie_word_embeddings", out var tie) && tie.ValueKind is JsonValueKind.True or JsonValueKind.False ? tie.GetBoolean() : null,
                Str(root, "torch_dtype") ?? Str(root, "dtype"),
                json);
        }
        catch (JsonException ex)
        {
            throw new ModelFolderException($"{source}: not valid JSON: {ex.Message}", ex);
        }
    }

    private static string? Str(JsonElement root, string name) =>
        root.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    private static int? Int(JsonElement root, string name, string source)
    {
        if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null)
        {
            return null;
        }
        return v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out var i) && i >= 0
            ? i
            : throw new ModelFolderException($"{source}: '{name}' is {v}, expected a non-negative integer");
    }
}
