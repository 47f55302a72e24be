using System.Text.Json;
using System.Text.Json.Nodes;
using SensMerging.Core.Engine;

namespace SensMerging.Core.Tokenizers;

/// <summary>
/// mergekit's <c>chat_template</c>: the name of a built-in template (the formats mergekit ships: chatml, llama3, alpaca,
/// mistral, exaone; the templates here are this project's own Jinja for those formats), <c>auto</c> (the template most of
/// the input models' tokenizers carry; none: the tokenizer's own is kept), or a Jinja template itself (at least 20
/// characters, with a <c>{</c>). Written into the output's <c>tokenizer_config.json</c> as <c>chat_template</c>.
/// </summary>
public static class ChatTemplates
{
    /// <summary>The value that picks the inputs' most common template.</summary>
    public const string Auto = "auto";

    private static readonly Dictionary<string, string> BuiltIn = new(StringComparer.Ordinal)
    {
        ["chatml"] =
            "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
            + "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
        ["llama3"] =
            "{% for message in messages %}{% if loop.first %}{{ bos_token }}{% endif %}"
            + "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + (message['content'] | trim) + '<|eot_id|>' }}{% endfor %}"
            + "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
        ["alpaca"] =
            "{% for message in messages %}{% if message['role'] == 'system' %}{{ (message['content'] | trim) + '\\n\\n' }}"
            + "{% elif message['role'] == 'user' %}{{ '### Instruction:\\n' + (message['content'] | trim) + '\\n\\n' }}"
            + "{% elif message['role'] == 'user_context' %}{{ '### Input:\\n' + (message['content'] | trim) + '\\n\\n' }}"
            + "{% elif message['role'] == 'assistant' %}{{ '### Response:\\n' + (message['content'] | trim) + '\\n\\n' }}{% endif %}{% endfor %}"
            + "{% if add_generation_prompt and messages[-1]['role'] != 'assistant' %}{{ '### Response:\\n' }}{% endif %}",
        ["mistral"] =
            "{%- if messages and messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}{%- set turns = messages[1:] %}"
            + "{%- else %}{%- set turns = messages %}{%- endif %}{{- bos_token }}{%- for message in turns %}"
            + "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{- raise_exception('roles must alternate user/assistant after an optional system message') }}{%- endif %}"
            + "{%- if message['role'] == 'user' %}{%- if loop.first and system_message is defined %}{{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}"
            + "{%- else %}{{- ' [INST] ' + message['content'] + ' [/INST]' }}{%- endif %}"
            + "{%- elif message['role'] == 'assistant' %}{{- ' ' + message['content'] + eos_token }}"
            + "{%- else %}{{- raise_exception('only user and assistant roles, after an optional system message') }}{%- endif %}{%- endfor %}",
        ["exaone"] =
            "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}{{ '[|system|][|endofturn|]\\n' }}{% endif %}"
            + "{{ '[|' + message['role'] + '|]' + message['content'] }}{% if message['role'] == 'user' %}{{ '\\n' }}{% else %}{{ '[|endofturn|]\\n' }}{% endif %}{% endfor %}"
            + "{% if add_generation_prompt %}{{ '[|assistant|]' }}{% endif %}",
    };

    /// <summary>The built-in templates' names.</summary>
    public static IReadOnlyCollection<string> Names => BuiltIn.Keys;

    /// <summary>The built-in template <paramref name="name"/>, or null.</summary>
    public static string? Named(string name) => BuiltIn.GetValueOrDefault(name);

    /// <summary>
    /// The template <paramref name="value"/> asks for: a built-in's text, the most common template among the tokenizers in
    /// <paramref name="modelFolders"/> for <c>auto</c> (null when none has one; ties go to the first model's), or the value
    /// itself as a Jinja template.
    /// </summary>
    /// <exception cref="MergeValidationException">The value is neither a built-in name nor a plausible template.</exception>
    public static string? Resolve(string value, IEnumerable<string> modelFolders)
    {
        ArgumentException.ThrowIfNullOrEmpty(value);
        ArgumentNullException.ThrowIfNull(modelFolders);
        if (value == Auto)
        {
            var templates = modelFolders.Select(Of).OfType<string>().Select(t => t.Trim()).Where(t => t.Length > 0).ToList();
            return templates.Count == 0 ? null : templates.GroupBy(t => t, StringComparer.Ordinal).OrderByDescending(g => g.Count()).First().Key;
        }
        if (Named(value) is { } builtIn)
        {
            return builtIn;
        }
        if (value.Length < 20 || !value.Contains('{', StringComparison.Ordinal))
        {
            throw new MergeValidationException(
                $"chat_template '{value}' is neither a built-in template ({string.Join(", ", Names.Order(StringComparer.Ordinal))}), 'auto', nor a Jinja template");
        }
        return value;
    }

    /// <summary>The chat template a model folder's tokenizer carries (<c>chat_template.jinja</c>, else <c>tokenizer_config.json</c>'s; a named set's <c>default</c>), or null.</summary>
    public static string? Of(string folder)
    {
        var jinja = Path.Combine(folder, "chat_template.jinja");
        if (File.Exists(jinja))
        {
            return File.ReadAllText(jinja);
        }
        var config = Path.Combine(folder, TokenizerFiles.ConfigFileName);
        if (!File.Exists(config))
        {
            return null;
        }
        try
        {
            return JsonNode.Parse(File.ReadAllText(config))?["chat_template"] switch
            {
                JsonValue v when v.TryGetValue<string>(out var s) => s,
                JsonArray named => named.OfType<JsonObject>().FirstOrDefault(n => n["name"]?.GetValue<string>() == "default")?["template"]?.GetValue<string>(),
                _ => null,
            };
        }
        catch (JsonException e)
        {
            throw new MergeValidationException($"{config}: malformed JSON ({e.Message})");
        }
    }
}
