using System.Text.Json;
using System.Text.Json.Nodes;
using SensMerging.Core.Engine;

namespace SensMerging.Core.Tokenizers;

/// <summary>
/// Writes a merged model's tokenizer files: those of an <see cref="OutputVocabulary"/> (its <c>tokenizer.json</c>, the
/// source's <c>tokenizer_config.json</c> with <c>added_tokens_decoder</c> made to match, and the source's
/// <c>special_tokens_map.json</c> and <c>tokenizer.model</c>), and a chat template into <c>tokenizer_config.json</c>.
/// </summary>
public static class TokenizerFiles
{
    /// <summary><c>tokenizer_config.json</c>.</summary>
    public const string ConfigFileName = "tokenizer_config.json";

    /// <summary>Files that carry a chat template apart from <c>tokenizer_config.json</c> (and would override it).</summary>
    private static readonly string[] TemplateFiles = ["chat_template.jinja", "chat_template.json"];

    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    /// <summary>Writes <paramref name="vocabulary"/>'s tokenizer into <paramref name="folder"/>, with <paramref name="chatTemplate"/> when given.</summary>
    public static void Write(string folder, OutputVocabulary vocabulary, string? chatTemplate)
    {
        ArgumentNullException.ThrowIfNull(vocabulary);
        vocabulary.SaveTokenizer(Path.Combine(folder, TokenizerJson.FileName));
        var config = ReadConfig(Path.Combine(vocabulary.FilesFolder, ConfigFileName)) ?? [];
        var decoder = new JsonObject();
        foreach (var (id, content, node) in vocabulary.AddedTokens)
        {
            decoder[id.ToString(System.Globalization.CultureInfo.InvariantCulture)] = new JsonObject
            {
                ["content"] = content,
                ["lstrip"] = node["lstrip"]?.DeepClone() ?? false,
                ["normalized"] = node["normalized"]?.DeepClone() ?? true,
                ["rstrip"] = node["rstrip"]?.DeepClone() ?? false,
                ["single_word"] = node["single_word"]?.DeepClone() ?? false,
                ["special"] = node["special"]?.DeepClone() ?? false,
            };
        }
        config["added_tokens_decoder"] = decoder;
        File.WriteAllText(Path.Combine(folder, ConfigFileName), config.ToJsonString(Indented) + "\n");
        string[] copied = chatTemplate is null ? ["special_tokens_map.json", "tokenizer.model", .. TemplateFiles] : ["special_tokens_map.json", "tokenizer.model"];
        foreach (var name in copied)
        {
            var source = Path.Combine(vocabulary.FilesFolder, name);
            if (File.Exists(source))
            {
                File.Copy(source, Path.Combine(folder, name), overwrite: true);
            }
        }
        if (chatTemplate is not null)
        {
            SetChatTemplate(folder, chatTemplate);
        }
    }

    /// <summary>
    /// Sets <c>chat_template</c> in <paramref name="folder"/>'s <c>tokenizer_config.json</c> (created when absent) and
    /// removes <c>chat_template.jinja</c> / <c>chat_template.json</c>, which would take precedence over it.
    /// </summary>
    public static void SetChatTemplate(string folder, string template)
    {
        ArgumentException.ThrowIfNullOrEmpty(template);
        var path = Path.Combine(folder, ConfigFileName);
        var config = ReadConfig(path) ?? [];
        config["chat_template"] = template;
        File.WriteAllText(path, config.ToJsonString(Indented) + "\n");
        foreach (var name in TemplateFiles)
        {
            File.Delete(Path.Combine(folder, name));
        }
    }

    private static JsonObject? ReadConfig(string path)
    {
        if (!File.Exists(path))
        {
            return null;
        }
        try
        {
            return JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new MergeValidationException($"{path}: expected a JSON object");
        }
        catch (JsonException e)
        {
            throw new MergeValidationException($"{path}: malformed JSON ({e.Message})");
        }
    }
}
