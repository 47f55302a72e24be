using System.Text;
using System.Text.RegularExpressions;

namespace SensMerging.Hub.Client;

/// <summary>
/// fnmatch-like patterns as the official clients use for allow/ignore patterns: '*' and '**' match any run of
/// characters (including '/'), '?' one character, '[abc]', '[a-z]' and '[!abc]' a character class. A pattern
/// ending with '/' matches everything below that folder.
/// </summary>
public sealed class HubGlob
{
    private readonly Regex _regex;

    /// <summary>Compiles a pattern; throws <see cref="ArgumentException"/> for an empty one.</summary>
    public HubGlob(string pattern)
    {
        ArgumentException.ThrowIfNullOrEmpty(pattern);
        Pattern = pattern;
        _regex = new Regex(ToRegex(pattern.EndsWith('/') ? pattern + "*" : pattern),
            RegexOptions.CultureInvariant | RegexOptions.Singleline, TimeSpan.FromSeconds(1));
    }

    /// <summary>The pattern as given.</summary>
    public string Pattern { get; }

    /// <summary>True when the pattern has no wildcard, i.e. names one file.</summary>
    public bool IsLiteral => Pattern.IndexOfAny(['*', '?', '[']) < 0 && !Pattern.EndsWith('/');

    /// <summary>True when <paramref name="path"/> matches the whole pattern.</summary>
    public bool IsMatch(string path) => _regex.IsMatch(path);

    /// <summary>
    /// Applies include patterns (none = everything) and then exclude patterns.
    /// </summary>
    public static bool Filter(string path, IReadOnlyList<HubGlob> include, IReadOnlyList<HubGlob> exclude)
    {
        if (include.Count > 0 && !include.Any(g => g.IsMatch(path)))
        {
            return false;
        }

        return !exclude.Any(g => g.IsMatch(path));
    }

    private static string ToRegex(string pattern)
    {
        var sb = new StringBuilder("^");
        for (int i = 0; i < pattern.Length; i++)
        {
            char c = pattern[i];
            switch (c)
            {
                case '*':
                    while (i + 1 < pattern.Length && pattern[i + 1] == '*')
                    {
                        i++;
                    }

                    sb.Append(".*");
                    break;
                case '?':
                    sb.Append('.');
                    break;
                case '[':
                    int close = FindClass(pattern, i);
                    if (close < 0)
                    {
                        sb.Append(@"\[");
                        break;
                    }

                    var body = pattern.Substring(i + 1, close - i - 1);
                    sb.Append('[');
                    if (body.StartsWith('!'))
                    {
                        sb.Append('^');
                        body = body[1..];
                    }

                    sb.Append(body.Replace(@"\", @"\\", StringComparison.Ordinal).Replace("^", @"\^", StringComparison.Ordinal)
                        .Replace("[", @"\[", StringComparison.Ordinal));
                    sb.Append(']');
                    i = close;
                    break;
                default:
                    sb.Append(Regex.Escape(c.ToString()));
                    break;
            }
        }

        return sb.Append('$').ToString();
    }

    private static int FindClass(string pattern, int open)
    {
        int j = open + 1;
        if (j < pattern.Length && pattern[j] == '!')
        {
            j++;
        }

        if (j < pattern.Length && pattern[j] == ']')
        {
            j++;
        }

        while (j < pattern.Length && pattern[j] != ']')
        {
            j++;
        }

        return j < pattern.Length ? j : -1;
    }
}
