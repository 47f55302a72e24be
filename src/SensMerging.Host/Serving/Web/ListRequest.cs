using System.Globalization;
using Microsoft.AspNetCore.Http;
using SensMerging.Registry;

namespace SensMerging.Host.Serving.Web;

/// <summary>
/// The filters of <c>registry list</c> as URL query parameters (<c>model</c>, <c>strategy</c>, <c>decorator</c>,
/// <c>q</c>, <c>since</c>, <c>until</c>, <c>status</c>, <c>sort</c>, <c>score</c>, <c>offset</c>, <c>limit</c>), turned into
/// the same <see cref="MergeQuery"/> the CLI builds. The models page and <c>/api/registry/merges</c> both read them.
/// </summary>
internal sealed record ListRequest(MergeQuery Query)
{
    /// <summary>Page size when none is asked for.</summary>
    public const int DefaultLimit = 50;

    /// <summary>The largest page a request may ask for (0, "everything", is refused over HTTP).</summary>
    public const int MaxLimit = 500;

    /// <summary>Parses the query string; throws <see cref="FormatException"/> with a message for the user on a bad value.</summary>
    public static ListRequest Parse(IQueryCollection q)
    {
        ArgumentNullException.ThrowIfNull(q);
        var limit = Int(q, "limit") ?? DefaultLimit;
        if (limit is < 1 or > MaxLimit)
        {
            throw new FormatException($"limit must be between 1 and {MaxLimit}");
        }
        var offset = Int(q, "offset") ?? 0;
        if (offset < 0)
        {
            throw new FormatException("offset must be 0 or positive");
        }
        return new ListRequest(new MergeQuery
        {
            Model = Text(q, "model"),
            Strategy = Text(q, "strategy"),
            Decorator = Text(q, "decorator"),
            Search = Text(q, "q"),
            Since = Date(q, "since"),
            Until = Date(q, "until"),
            Status = Text(q, "status") is { } s
                ? Enum.TryParse<MergeStatus>(s, ignoreCase: true, out var status) && Enum.IsDefined(status) ? status
                    : throw new FormatException($"status must be running, succeeded, failed or cancelled, not '{s}'")
                : null,
            Sort = Text(q, "sort") is { } o
                ? Enum.TryParse<MergeSort>(o, ignoreCase: true, out var sort) && Enum.IsDefined(sort) ? sort
                    : throw new FormatException($"sort must be newest, oldest or score, not '{o}'")
                : MergeSort.Newest,
            ScoreKey = Text(q, "score"),
            Offset = offset,
            Limit = limit,
        });
    }

    /// <summary>The query string of this request with some parameters replaced (null removes one), for links.</summary>
    public string With(params (string Name, string? Value)[] changes)
    {
        var values = new List<KeyValuePair<string, string?>>
        {
            new("q", Query.Search),
            new("model", Query.Model),
            new("strategy", Query.Strategy),
            new("decorator", Query.Decorator),
            new("status", Query.Status?.ToString().ToLowerInvariant()),
            new("since", Query.Since?.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture)),
            new("until", Query.Until?.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture)),
            new("sort", Query.Sort == MergeSort.Newest ? null : Query.Sort.ToString().ToLowerInvariant()),
            new("score", Query.ScoreKey),
            new("offset", Query.Offset == 0 ? null : Query.Offset.ToString(CultureInfo.InvariantCulture)),
            new("limit", Query.Limit == DefaultLimit ? null : Query.Limit.ToString(CultureInfo.InvariantCulture)),
        };
        foreach (var (name, value) in changes)
        {
            var i = values.FindIndex(v => v.Key == name);
            values[i] = new(name, value);
        }
        return QueryString.Create(values.Where(v => !string.IsNullOrEmpty(v.Value))).ToUriComponent();
    }

    private static string? Text(IQueryCollection q, string name) =>
        q.TryGetValue(name, out var v) && !string.IsNullOrWhiteSpace(v.ToString()) ? v.ToString().Trim() : null;

    private static int? Int(IQueryCollection q, string name) =>
        Text(q, name) is { } s
            ? int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out var i) ? i : throw new FormatException($"{name} must be a whole number, not '{s}'")
            : null;

    private static DateTime? Date(IQueryCollection q, string name) =>
        Text(q, name) is { } s
            ? DateTime.TryParse(s, CultureInfo.InvariantCulture, DateTimeStyles.AdjustToUniversal | DateTimeStyles.AssumeUniversal, out var d)
                ? DateTime.SpecifyKind(d, DateTimeKind.Utc)
                : throw new FormatException($"{name} must be a date (yyyy-MM-dd) or a date and time, not '{s}'")
            : null;
}
