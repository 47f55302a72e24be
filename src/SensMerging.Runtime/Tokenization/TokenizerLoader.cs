using System.Text.Json;
using System.Text.Json.Nodes;
using SensMerging.Runtime.Model;

namespace SensMerging.Runtime.Tokenization;

/// <summary>
/// Loads the tokenizer of a model folder: <c>tokenizer.json</c> (WordLevel, or byte-level BPE) when present, otherwise
/// SentencePiece <c>tokenizer.model</c>. BOS is prepended when tokenizer_config.json says <c>add_bos_token</c>, or
/// (without that key) when tokenizer.json's post-processor template starts with a special token, or for SentencePiece
/// models; BOS/EOS/PAD ids come from tokenizer_config.json token names, else config.json ids.
/// </summary>
public static class TokenizerLoader
{
    public const string TokenizerJsonName = "tokenizer.json";
    public const string SentencePieceName = "tokenizer.model";
    public const string TokenizerConfigName = "tokenizer_config.json";

    public static TextTokenizerBase Load(string modelDirectory, LlamaConfig? config = null)
    {
        ArgumentNullException.ThrowIfNull(modelDirectory);
        var jsonPath = Path.Combine(modelDirectory, TokenizerJsonName);
        var spPath = Path.Combine(modelDirectory, SentencePieceName);
        var tokenizerConfig = ReadObject(Path.Combine(modelDirectory, TokenizerConfigName));
        JsonObject? root = File.Exists(jsonPath) ? ReadObject(jsonPath) ?? throw new InvalidDataException($"{jsonPath} is not a JSON object.") : null;
        var settings = new SpecialTokenSettings(
            AddBos: tokenizerConfig?["add_bos_token"] is JsonValue add && add.TryGetValue<bool>(out var addBos) ? addBos : null,
            BosToken: HuggingFaceTokenizerJson.TokenName(tokenizerConfig?["bos_token"]),
            EosToken: HuggingFaceTokenizerJson.TokenName(tokenizerConfig?["eos_token"]),
            PadToken: HuggingFaceTokenizerJson.TokenName(tokenizerConfig?["pad_token"]),
            ConfigBosId: config?.BosTokenId,
            ConfigEosId: config?.EosTokenId,
            ConfigPadId: config?.PadTokenId,
            TemplateBosToken: HuggingFaceTokenizerJson.TemplateBosToken(root?["post_processor"]));

        if (root is not null)
        {
            var type = root["model"]?["type"]?.GetValue<string>();
            var byteFallback = root["model"] is System.Text.Json.Nodes.JsonObject model && model["byte_fallback"] is JsonValue fallback && fallback.TryGetValue<bool>(out var on) && on;
            switch (type)
            {
                case "WordLevel":
                    return WordLevelTokenizer.FromJson(root, jsonPath, settings);
                case "BPE" when byteFallback && File.Exists(spPath):
                    return MlTokenizerAdapter.FromSentencePiece(spPath, settings);
                case "BPE":
                    return MlTokenizerAdapter.FromBpeJson(root, jsonPath, settings);
                default:
                    if (File.Exists(spPath))
                    {
                        return MlTokenizerAdapter.FromSentencePiece(spPath, settings);
                    }
                    throw new InvalidDataException($"{jsonPath}: tokenizer model type '{type ?? "(none)"}' is not supported (WordLevel, byte-level BPE; or provide tokenizer.model).");
            }
        }
        if (File.Exists(spPath))
        {
            return MlTokenizerAdapter.FromSentencePiece(spPath, settings);
        }
        throw new FileNotFoundException($"No tokenizer in {modelDirectory}: expected {TokenizerJsonName} or {SentencePieceName}.", jsonPath);
    }

    private static JsonObject? ReadObject(string path)
    {
        if (!File.Exists(path))
        {
            return null;
        }
        try
        {
            return JsonNode.Parse(File.ReadAllText(path)) as JsonObject;
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"{path} is not valid JSON: {ex.Message}", ex);
        }
    }
}
